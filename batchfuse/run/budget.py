"""Per-run budgets: ``limits.max_images`` and ``limits.max_cost``.

Money spent is ``images made × cost_per_image`` plus, with ``pricing.per_million_tokens``, the
thinking tokens the replies reported (``thoughtsTokenCount``, billed as output) at the token
price: those are known only when a reply arrives, so they are counted as replies settle.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Budget:
    """Images made and reserved by requests in flight, so a cap holds under concurrency."""

    max_images: int | None
    max_cost: float | None
    cost_per_image: float
    #: Money per thinking token (0 when pricing is per image, which covers the whole image).
    cost_per_token: float = 0.0
    made: int = 0
    reserved: int = 0
    #: Thinking tokens the replies of this run reported.
    thoughts: int = 0

    @property
    def spent(self) -> float:
        return self.made * self.cost_per_image + self.thoughts * self.cost_per_token

    def reserve(self, images: int) -> str | None:
        """Reserve ``images`` for a request; the reason to stop instead, if the budget is spent."""
        committed = self.made + self.reserved + images
        if self.max_images is not None and committed > self.max_images:
            return f"budget reached: {self.made} images made of max_images {self.max_images}"
        committed_cost = self.spent + (self.reserved + images) * self.cost_per_image
        if self.max_cost is not None and committed_cost > self.max_cost + 1e-9:
            thinking = f", {self.thoughts:,} thinking tokens" if self.thoughts else ""
            return (
                f"budget reached: {self.spent:.2f} spent of max_cost {self.max_cost:g} "
                f"({self.made} images{thinking})"
            )
        self.reserved += images
        return None

    def settle(self, reserved: int, made: int, thoughts: int | None = None) -> None:
        self.reserved -= reserved
        self.made += made
        self.thoughts += thoughts or 0
