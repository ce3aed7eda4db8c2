"""The live counters of one run, read by the progress display and the final line."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RunStats:
    """Live counters of one run, read by the progress display."""

    to_do: int = 0
    #: Set once the plan is in the store and reported (the live display starts then).
    planned: bool = False
    succeeded: int = 0
    failed: int = 0
    #: Of ``succeeded``: outputs already on disk from an unrecorded attempt, not sent again.
    adopted: int = 0
    retries: int = 0
    requests: int = 0
    in_flight: int = 0
    #: Paid results kept in the spool because their outputs could not be written.
    spooled: int = 0
    #: Claims handed back untouched because the run stopped before they were sent.
    returned: int = 0
    #: Requests on the wire when the stop began (they finish within the grace).
    in_flight_at_stop: int = 0
    started: float = field(default_factory=time.monotonic)
    status: str = "running"

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def rate(self) -> float:
        """Items finished per second so far."""
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        left = max(self.to_do - self.done, 0)
        return left / rate if rate > 0 else None
