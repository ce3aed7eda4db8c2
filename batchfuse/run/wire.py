"""When a request counts as sent: the moment it takes its connection, checked against the run's stop.

Everything before that moment — waiting for the rate limiter, a request slot, a connection,
reading or downloading reference images — can be abandoned without anything leaving the
machine.  The run's session uses :class:`WireConnector`; the scheduler puts a :class:`Wire`
in the item's context before calling the provider.  Handing out the connection is the last
step before aiohttp writes the request, so the connector asks the wire there: a run that has
begun stopping refuses (:class:`NotSent`) and the request never leaves; otherwise the wire
is marked sent, and from then on the request is *in flight* and finishes within the grace.

Example::

    session = aiohttp.ClientSession(connector=WireConnector(limit=16))
    wire = Wire(may_send=lambda: not stopping, on_sent=count_request)
    CURRENT.set(wire)              # in the item's task
    await provider.generate(...)   # raises NotSent if the stop came first
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp


class NotSent(Exception):
    """The run began stopping before this request took its connection: nothing was sent."""


@dataclass(eq=False)
class Wire:
    """One attempt's passage to the wire."""

    #: Asked at the last moment before sending; False refuses the request.
    may_send: Callable[[], bool]
    #: Called once, when the request goes out.
    on_sent: Callable[[], None]
    sent: bool = False
    #: Set when the run took this attempt back before it was sent.
    withdrawn: bool = False

    def commit(self) -> None:
        """The request is about to be written: mark it sent, or raise :class:`NotSent`."""
        if self.sent:
            return
        if self.withdrawn or not self.may_send():
            self.withdrawn = True
            raise NotSent()
        self.sent = True
        self.on_sent()


#: The wire of the attempt running in this task (None outside a run's attempts).
CURRENT: ContextVar[Wire | None] = ContextVar("batchfuse_wire", default=None)


class WireConnector(aiohttp.TCPConnector):
    """A TCP connector that hands out a connection only to an attempt its run still lets send."""

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        conn = await super().connect(req, traces, timeout)
        wire = CURRENT.get()
        if wire is not None:
            try:
                wire.commit()
            except NotSent:
                conn.release()
                raise
        return conn
