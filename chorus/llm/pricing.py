"""Cost of a model call from the price table in the settings."""

from __future__ import annotations

from chorus.llm.types import Messages
from chorus.settings import ModelPrice, PricingSettings, Settings, Tier


def max_prompt_tokens(messages: Messages) -> int:
    """An upper bound on prompt tokens that needs no tokenizer.

    A BPE token encodes at least one byte, so UTF-8 bytes plus a few special tokens per message
    bound the count for any model; budgets reserve against it so spend can never overshoot.
    """
    return sum(len(m["content"].encode("utf-8")) + 8 for m in messages) + 8


def first_endpoint(settings: Settings, tier: Tier) -> tuple[Tier, str]:
    """The tier and model the router tries first for a step asked on `tier`: the premium tier
    only when it is configured (otherwise its steps run on the local tier)."""
    if tier == "premium" and settings.premium.configured:
        return "premium", settings.premium.model
    return "local", settings.local.model


class PriceTable:
    def __init__(self, pricing: PricingSettings) -> None:
        self._pricing = pricing

    def price(self, tier: Tier, model: str) -> ModelPrice:
        if tier == "local":
            per = self._pricing.local_per_mtok
            return ModelPrice(input_per_mtok=per, output_per_mtok=per)
        return self._pricing.models.get(model, self._pricing.unknown_model)

    def cost(self, tier: Tier, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price = self.price(tier, model)
        return (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1_000_000

    def worst_case(self, tier: Tier, model: str, messages: Messages, max_tokens: int) -> float:
        """What a call can cost at most, and so what a budget reserves for it."""
        return self.cost(tier, model, max_prompt_tokens(messages), max_tokens)
