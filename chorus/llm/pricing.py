"""Cost of a model call from the price table in the settings."""

from __future__ import annotations

from chorus.settings import ModelPrice, PricingSettings, Tier


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
