"""The scheduler: claims items from the store a page at a time, sends at most
``concurrency`` of them at once under the rate limit, retries transient failures, writes
outputs and records every attempt.

Two gates: ``gate`` (``concurrency`` wide, lowered by the adaptive limits) is held only while
a request is on the wire — taken *before* the rate limiter and the HTTP call, so waiting for
a connection never eats into a request's timeout; ``in_hand`` bounds the items claimed at
once, so an item sleeping before its retry does not hold a request slot.

Around them: the outage breaker (pause while the API is down), the per-run budget, the
deadline and the grace period of a stop.  Finished attempts go to the
:class:`~batchfuse.recorder.Recorder`; each item waits for its own commit.

Stopping (signal, deadline, budget, fatal error, an output or internal failure): from that
moment no request leaves.  An attempt that has not reached the wire (:mod:`batchfuse.run.wire`)
— waiting for the breaker, a slot, the rate limiter, a connection or its reference images —
is taken back and its claim returned untouched; only requests already sent finish, within
the grace.  An exception nothing expected stops the run as an internal error, never silently.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchfuse import faultpoints
from batchfuse.errors import (
    BatchfuseError,
    ErrorClass,
    ProviderError,
    StoreError,
    TransientError,
)
from batchfuse.images import ImageProblem
from batchfuse.outputs.files import OutputFolder, PendingOutputs
from batchfuse.providers.base import Provider, Reply
from batchfuse.records import ClaimedItem, Job
from batchfuse.run.breaker import Breaker
from batchfuse.run.budget import Budget
from batchfuse.run.outcomes import Outcomes
from batchfuse.run.progress import plural
from batchfuse.run.ratelimit import AdaptiveLimits, Gate, RateLimiter
from batchfuse.run.recorder import Recorder
from batchfuse.run.retry import RetryPolicy
from batchfuse.run.stats import RunStats
from batchfuse.run.wire import CURRENT, NotSent, Wire
from batchfuse.store.aio import AsyncStore

log = logging.getLogger("batchfuse.run")


@dataclass
class SchedulerConfig:
    concurrency: int
    requests_per_minute: float | None
    policy: RetryPolicy
    output_template: str
    model: str
    job_name: str
    lease_s: float = 60.0
    only_keys: list[str] | None = None
    #: Budgets for this run: images made or in flight, and their cost.
    max_images: int | None = None
    max_cost: float | None = None
    cost_per_image: float = 0.0
    #: Money per thinking token (``pricing.per_million_tokens``), counted as replies report them.
    cost_per_token: float = 0.0
    #: How many images one request of an item makes (``n``), from its params.
    images_per_item: Callable[[dict[str, Any]], int] = lambda params: 1
    #: No request starts after this moment (``time.time()``), if set.
    deadline: float | None = None
    #: After a stop, in-flight requests get this long to finish before they are cancelled.
    grace_s: float = 60.0
    #: Lower rate and concurrency on 429s, then climb back (AIMD).
    adaptive: bool = True
    #: Pause when the API looks down (many transient failures in a row).
    breaker: Breaker = field(default_factory=Breaker)
    #: Other runners may work on the same job (PostgreSQL): the rate and concurrency are the
    #: job's, split among the live runners, and leases are confirmed before outputs are renamed.
    shared: bool = False
    #: The provider's session hands out connections through a :class:`~batchfuse.wire.WireConnector`,
    #: which marks the moment a request is sent; without it, calling the provider counts as sending.
    wire_checked: bool = False


class Scheduler(Outcomes):
    """Runs the claimable items of one job until none are left or the run is stopped."""

    def __init__(
        self,
        config: SchedulerConfig,
        db: AsyncStore,
        job: Job,
        run_id: int,
        runner_id: str,
        provider: Provider,
        outputs: OutputFolder,
        stats: RunStats | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.job = job
        self.run_id = run_id
        self.runner_id = runner_id
        self.provider = provider
        self.outputs = outputs
        self.stats = stats or RunStats()
        self.limiter = RateLimiter(config.requests_per_minute)
        self.gate = Gate(config.concurrency)
        self.adaptive = AdaptiveLimits(self.limiter, self.gate, config.requests_per_minute, config.concurrency)
        self.budget = Budget(config.max_images, config.max_cost, config.cost_per_image, config.cost_per_token)
        self.breaker = config.breaker
        self.breaker.on_change = self._breaker_changed
        self._grace: asyncio.TimerHandle | None = None
        self._runners = 1
        #: Only PNG outputs carry the metadata that proves which spec made them (objects in a bucket: any format).
        self._may_adopt = config.output_template.lower().endswith(".png") or outputs.remote
        self.stop_reason: str | None = None
        self.stop_error: BatchfuseError | None = None
        self._stopping = asyncio.Event()
        #: An exception nothing expected ended an item: the run ends as an internal error.
        self.internal_error = False
        #: Why the budget allows no more requests (the run stops when those in hand are done).
        self._budget_spent: str | None = None
        #: An item was re-planned while its request was in flight: claim once more at the end.
        self._claim_again = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: Attempts on their way to the wire, by task: a stop takes them back.
        self._waiting: dict[asyncio.Task[Any], Wire] = {}
        self._resume: dict[int, dict[str, Any] | None] = {}
        self._rng = random.Random()

    # ---------------------------------------------------------------- stopping

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, reason: str, error: BatchfuseError | None = None) -> None:
        """Send nothing more: attempts not yet on the wire give their claims back; requests
        in flight finish (within the grace) and are recorded."""
        if self.stopping:
            return
        self.stop_reason, self.stop_error = reason, error
        self._stopping.set()
        me = asyncio.current_task()
        for task, wire in list(self._waiting.items()):
            if not wire.sent and not wire.withdrawn:
                wire.withdrawn = True
                if task is not me:  # the current task sees ``withdrawn`` itself
                    task.cancel()
        self.stats.in_flight_at_stop = self.stats.in_flight
        self._show_stop()
        log.warning(
            "run stopping: %s; nothing more is sent, %s in flight finish within %gs",
            reason, plural(self.stats.in_flight, "request"), self.config.grace_s,
            extra={"event": "stopping", "reason": reason, "in_flight": self.stats.in_flight, "at": time.time()},
        )
        if self._tasks:
            self._grace = asyncio.get_running_loop().call_later(self.config.grace_s, self._grace_over)

    def _show_stop(self) -> None:
        self.stats.status = (
            f"stopping: {self.stop_reason} ({self.stats.in_flight} in flight, {self.stats.returned} claims returned)"
        )

    def _may_send(self) -> bool:
        """Asked at the last moment before a request leaves."""
        deadline = self.config.deadline
        if deadline is not None and not self.stopping and time.time() >= deadline:
            self._deadline_passed(deadline)
        return not self.stopping

    def _sent(self) -> None:
        self.stats.requests += 1
        self.stats.in_flight += 1

    async def _give_back(self, item_ids: list[int]) -> None:
        """Hand claimed items back untouched (not an attempt): the run is stopping."""
        if item_ids:
            await self.db.release(self.runner_id, item_ids)
            self.stats.returned += len(item_ids)
            self._show_stop()

    def _grace_over(self) -> None:
        if self._tasks:
            log.warning("grace period over: cancelling %s in flight", plural(len(self._tasks), "item"))
            self.cancel_in_flight()

    def _breaker_changed(self, message: str) -> None:
        self.stats.status = "paused: API failing" if self.breaker.is_open else "running"
        log.warning("%s", message, extra={"event": "breaker", "open": self.breaker.is_open})

    def cancel_in_flight(self) -> None:
        """Cut in-flight requests short; their attempts are recorded as interrupted."""
        for task in list(self._tasks):
            task.cancel()

    # ---------------------------------------------------------------- main loop

    async def run(self) -> None:
        self.recorder = Recorder(
            self.db, self.run_id, self.runner_id, self.config.lease_s, self.outputs, shared=self.config.shared
        )
        if self.config.shared:
            await self._take_share()
        helpers = [asyncio.create_task(self._heartbeat(), name="batchfuse-heartbeat")]
        if self.config.deadline is not None:
            helpers.append(asyncio.create_task(self._deadline(self.config.deadline), name="batchfuse-deadline"))
        try:
            while True:
                try:
                    await self._feed()
                except BatchfuseError as exc:  # the store failed while claiming: stop, finish what is out
                    self.stop(exc.message, exc)
                except Exception as exc:
                    self._internal(exc, "while claiming items")
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
                if self.stopping or not self._claim_again:
                    break
                self._claim_again = False  # results were dropped as superseded: their items run again
        finally:
            if self._grace is not None:
                self._grace.cancel()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.recorder.close()
        if self.stopping:
            log.warning(
                "stopped: %s in flight at the stop finished; %s returned untouched "
                "(not attempts; they run next time)", plural(self.stats.in_flight_at_stop, "request"),
                plural(self.stats.returned, "claim"),
                extra={"event": "stopped", "in_flight": self.stats.in_flight_at_stop, "returned": self.stats.returned},
            )

    def _internal(self, exc: BaseException, where: str) -> None:
        """An exception nothing expected: stop the run as an internal error (one line; the
        traceback with BATCHFUSE_DEBUG=1)."""
        self.internal_error = True
        log.debug("internal error %s", where, exc_info=exc)
        self.stop(f"internal error {where}: {type(exc).__name__}: {exc}")

    async def _deadline(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.time()))
        self._deadline_passed(when)

    def _deadline_passed(self, when: float) -> None:
        self.stop(f"deadline reached at {time.strftime('%H:%M:%S', time.localtime(when))}")

    async def _feed(self) -> None:
        in_hand = asyncio.Semaphore(self.config.concurrency * 2)
        page = max(8, min(256, self.config.concurrency * 2))
        cursor = -1
        while not self.stopping and not self._budget_spent:
            batch = await self.db.claim(self.job,
                self.runner_id,
                page,
                self.config.lease_s,
                self.config.policy.max_attempts,
                cursor,
                self.config.only_keys,
            )
            if not batch:
                if cursor >= 0:
                    cursor = -1  # one more pass from the top: items a dead runner left behind
                    continue
                if not (self.config.shared and await self._others_hold_items()):
                    return
                # other runners hold the rest: if one dies, its items come back when its
                # leases expire, and someone has to finish them
                await self._sleep_unless_stopped(min(2.0, self.config.lease_s / 2))
                continue
            cursor = batch[-1].ordinal
            for i, item in enumerate(batch):
                await in_hand.acquire()
                if self.stopping or self._budget_spent:
                    in_hand.release()
                    await self._give_back([it.id for it in batch[i:]])
                    return
                task = asyncio.create_task(self._process(item), name=f"item-{item.key}")
                self._tasks.add(task)
                task.add_done_callback(lambda t: (self._tasks.discard(t), in_hand.release(), self._observed(t)))

    def _observed(self, task: asyncio.Task[None]) -> None:
        """No item task's exception goes unobserved (``_process`` catches them; this is the net)."""
        if not task.cancelled() and task.exception() is not None:
            self._internal(task.exception(), f"in {task.get_name()}")  # type: ignore[arg-type]

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _others_hold_items(self) -> bool:
        return await self.db.held_by_others(self.job, self.runner_id) > 0

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.lease_s / 4, 5.0))
            try:
                await self.db.heartbeat(self.run_id, self.runner_id, self.config.lease_s)
                if self.config.shared:
                    await self._take_share()
            except StoreError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception as exc:
                self._internal(exc, "in the heartbeat")
                return

    async def _take_share(self) -> None:
        """This runner's share of the job's rate and concurrency: 1/N of each for N live runners."""
        n = max(1, await self.db.live_runners(self.job, self.config.lease_s))
        if n == self._runners:
            return
        self._runners = n
        rpm = self.config.requests_per_minute
        concurrency = max(1, -(-self.config.concurrency // n))
        self.adaptive.max_rpm = rpm / n if rpm is not None else None
        self.adaptive.max_concurrency = concurrency
        self.limiter.set_rate(self.adaptive.max_rpm)
        await self.gate.set_limit(concurrency)
        log.warning(
            "%d live runner(s) share this job: %s requests/minute and %d in flight here",
            n, f"{self.adaptive.max_rpm:.0f}" if rpm else "unlimited", concurrency,
            extra={"event": "share", "runners": n, "rpm": self.adaptive.max_rpm, "concurrency": concurrency},
        )

    # ---------------------------------------------------------------- one item

    async def _process(self, item: ClaimedItem) -> None:
        attempts_used = item.attempts
        self._resume[item.id] = item.resume
        try:
            while True:
                if self.stopping:
                    await self._give_back([item.id])
                    return
                attempts_used += 1
                retry_in = await self._attempt(item, attempts_used)
                if retry_in is None:
                    return
                self.stats.retries += 1
                await self._sleep_unless_stopped(retry_in)
        except BatchfuseError as exc:  # the store or the output folder failed: stop the run
            self.stop(exc.message, exc)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug: stop the run, never end "completed" with the item untouched
            self._internal(exc, f"while processing item {item.key}")
        finally:
            self._resume.pop(item.id, None)

    async def _attempt(self, item: ClaimedItem, number: int) -> float | None:
        """Send ``item`` once; returns the delay before a retry, or None when done with it."""
        faultpoints.hit("item.attempt")
        if number == item.attempts + 1:
            if item.spooled and await self._unspool(item, number):
                return None
            if self._may_adopt and await self._adopt(item):
                return None
        images = self.config.images_per_item(item.spec.params)
        sent = await self._send(item, number, images)
        if sent is None:  # the run stopped before it left: the claim goes back untouched
            await self._give_back([item.id])
            return None
        started, latency_ms, reply, error = sent
        made = 0
        try:
            pending: PendingOutputs | None = None
            if reply is not None:
                try:
                    pending = await self._prepare(item, reply)
                except ImageProblem as exc:
                    error = TransientError(
                        f"an image in the reply cannot be decoded: {exc}", status=200, code="bad_image"
                    )
            if error is None:
                assert reply is not None and pending is not None
                made = await self._finish(item, number, started, latency_ms, reply, pending)
                return None
            return await self._failed(item, number, started, latency_ms, error)
        finally:
            self._settle(images, made, reply.thoughts_tokens if reply is not None else None)

    def _settle(self, reserved: int, made: int, thoughts: int | None = None) -> None:
        self.budget.settle(reserved, made, thoughts)
        if self._budget_spent and not self.budget.reserved:
            self.stop(self._budget_spent)

    async def _send(
        self, item: ClaimedItem, number: int, images: int
    ) -> tuple[float, float, Reply | None, ProviderError | None] | None:
        """Wait for the breaker, a request slot, the budget and the rate limiter, then send.

        None when the run began stopping before the request reached the wire (nothing was
        sent, nothing reserved).  Once sent, the budget reservation is the caller's to settle.
        """
        task = asyncio.current_task()
        assert task is not None
        wire = Wire(self._may_send, self._sent)
        self._waiting[task] = wire
        reserved = False
        result = None
        try:
            await self.breaker.wait(self._stopping)
            async with self.gate:
                if not self._may_send():
                    return None
                over = self.budget.reserve(images)
                if over:  # the stop begins once the requests that fit the budget are done
                    self._budget_spent = over
                    if not self.budget.reserved:
                        self.stop(over)
                    return None
                reserved = True
                await self.limiter.acquire()
                if not self.config.wire_checked:
                    wire.commit()
                result = await self._request(item, number, wire)
                return result
        except NotSent:
            return None
        except asyncio.CancelledError:
            if wire.sent or not wire.withdrawn:
                raise
            if hasattr(task, "uncancel"):
                task.uncancel()  # the stop's cancel, consumed: this task goes on to give its claim back
            return None
        finally:
            self._waiting.pop(task, None)
            if reserved and result is None:
                self._settle(images, 0)

    async def _request(
        self, item: ClaimedItem, number: int, wire: Wire
    ) -> tuple[float, float, Reply | None, ProviderError | None]:
        """The HTTP request: (start time, latency ms, reply or error).  The wire marks the
        moment it is sent; until then a stop can still take it back."""
        seq = self.adaptive.sent()
        started = time.time()
        t0 = time.monotonic()
        reply: Reply | None = None
        error: ProviderError | None = None
        token = CURRENT.set(wire)
        try:
            reply = await self.provider.generate(item.spec, self._resume.get(item.id))
        except ProviderError as exc:
            error = exc
        except asyncio.CancelledError:
            if wire.sent:
                await self._record_interrupted(item, number, started)
            raise
        except NotSent:
            raise
        except Exception:  # a bug: record what was paid for, then stop the run (see _process)
            if wire.sent:
                await self._record_interrupted(item, number, started, internal=True)
            raise
        finally:
            CURRENT.reset(token)
            if wire.sent:
                self.stats.in_flight -= 1
        await self._observe(item, error, seq)
        return started, (time.monotonic() - t0) * 1000, reply, error

    async def _observe(self, item: ClaimedItem, error: ProviderError | None, seq: int) -> None:
        """Feed the outcome to the outage breaker and the adaptive limits; a fatal error stops the
        run here, while this request still holds its slot, so no waiting request takes the slot
        and leaves before the stop."""
        if error is not None and error.error_class is ErrorClass.fatal:
            self.stop(error.message, error)
        rate_limited = error is not None and error.status == 429 and error.error_class is ErrorClass.transient
        outage = error is not None and error.error_class is ErrorClass.transient and not rate_limited
        self.breaker.record(ok=not outage, item=item.key)
        if rate_limited and error is not None and error.retry_after:
            self.limiter.hold(error.retry_after)  # the key's quota is spent: nobody sends until then
        if not self.config.adaptive:
            return
        if rate_limited:
            if await self.adaptive.throttled(seq):
                log.warning(
                    "429 at the configured rate: lowering to %.0f requests/minute, %d in flight",
                    self.limiter.requests_per_minute or 0, self.gate.limit,
                    extra={"event": "rate", "rpm": self.limiter.requests_per_minute, "concurrency": self.gate.limit},
                )
        elif error is None:
            await self.adaptive.succeeded()
