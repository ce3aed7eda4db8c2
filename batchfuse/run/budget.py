"""Per-run budgets: ``limits.max_images`` and ``limits.max_cost``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Budget:
    """Images made and reserved by requests in flight, so a cap holds under concurrency."""

    max_images: int | None
    max_cost: float | None
    cost_per_image: float
    made: int = 0
    reserved: int = 0

    def reserve(self, images: int) -> str | None:
        """Reserve ``images`` for a request; the reason to stop instead, if the budget is spent."""
        committed = self.made + self.reserved + images
        if self.max_images is not None and committed > self.max_images:
            return f"budget reached: {self.made} images made of max_images {self.max_images}"
        if self.max_cost is not None and committed * self.cost_per_image > self.max_cost + 1e-9:
            return (
                f"budget reached: {self.made * self.cost_per_image:.2f} spent of max_cost {self.max_cost:g} "
                f"({self.made} images)"
            )
        self.reserved += images
        return None

    def settle(self, reserved: int, made: int) -> None:
        self.reserved -= reserved
        self.made += made
