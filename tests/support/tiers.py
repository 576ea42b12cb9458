"""The model tiers the suite runs on, and budgets sized against their prices.

The premium tier in tests is the project's own OpenAI-compatible endpoint under a priced name, so
real HTTP goes through the real `openai` client without any outside service.
"""

from __future__ import annotations

from chorus.persona import PersonaSpec
from chorus.settings import Settings

TEST_MODEL = "gemma-3-270m"
PREMIUM_PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 12.0}
# The local tier's service key; the premium tier in tests is that same tier, so it sends it too.
SERVICE_KEY = "test-service-key"


def hook_only_budget(settings: Settings, spec: PersonaSpec) -> float:
    """A daily budget with room for the hook's worst case and not the body's: a job of the
    persona (all steps local, no cache) pays for its hook, then stops with budget_exceeded."""
    from chorus.llm.pricing import PriceTable
    from chorus.llm.router import max_prompt_tokens
    from graphs.content.prompts import hook_messages

    worst = PriceTable(settings.pricing).cost(
        "local", settings.local.model, max_prompt_tokens(hook_messages(spec, spec.topics[0])), 40
    )
    return worst * 1.2
