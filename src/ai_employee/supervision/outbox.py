"""Posting to Slack off the pipeline's path: checkpoints queue per thread and coalesce.

`add()` is O(1) and never waits: the pipeline's events only land here. One worker task posts,
at most one flush per thread per `slack.min_interval`: the top message updated in place (the
latest state wins), one reply holding every checkpoint that came in between (none is dropped,
so the final state is always posted), the buttons of a decided plan taken away. Alerts go
first, to the alert channel.

A slow, failing or rate-limited Slack only holds this queue: slack-sdk's retry handlers honour
a 429's Retry-After; anything else that fails puts the thread's checkpoints back and waits the
link's backoff, and they are posted once Slack is back. Errors that no retry can fix
(`msg_too_long`, ...) drop that one post, with a log line. The thread of each item is stored
(SupervisionState) the moment it exists, so a restart goes on in the same thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from slack_sdk.web.async_client import AsyncWebClient

from ai_employee.clients.link import OutsideLink
from ai_employee.clients.slack import describe_slack_failure, is_permanent
from ai_employee.supervision.checkpoints import Checkpoint, ItemView
from ai_employee.supervision.render import (
    Message,
    alert_message,
    checkpoint_reply,
    decided_message,
    top_message,
)
from ai_employee.supervision.state import DecisionMessage, SupervisionState, ThreadRef
from ai_employee.supervision.status import Status

log = structlog.get_logger(__name__)

MAX_PENDING_LINES = 200  # per thread while Slack is away; beyond this the oldest middle lines merge


@dataclass
class _Pending:
    """What a thread has to post at its next flush."""

    action_id: str
    changes: dict[str, Any] = field(default_factory=dict)
    lines: list[tuple[Status, str]] = field(default_factory=list)
    decide: str | None = None  # plan id whose buttons the next reply carries
    retire: list[tuple[str, Status, str]] = field(default_factory=list)  # (plan id, status, line)

    def take(self, checkpoint: Checkpoint) -> None:
        self.changes.update({key: value for key, value in checkpoint.view.items() if value not in (None, "")})
        self.lines.append((checkpoint.status, checkpoint.line))
        if len(self.lines) > MAX_PENDING_LINES:
            del self.lines[1]
        if checkpoint.asks_decision and checkpoint.plan_id:
            self.decide = checkpoint.plan_id
        if checkpoint.decided and checkpoint.plan_id:
            if self.decide == checkpoint.plan_id:
                self.decide = None
            self.retire.append((checkpoint.plan_id, checkpoint.status, checkpoint.line))

    def absorb(self, newer: _Pending) -> None:
        """`self` failed to post; `newer` came meanwhile: one pending, in order."""
        self.changes.update(newer.changes)
        self.lines.extend(newer.lines)
        del self.lines[: max(0, len(self.lines) - MAX_PENDING_LINES)]
        if newer.decide or newer.retire:
            self.decide = newer.decide
        self.retire.extend(newer.retire)


@dataclass(frozen=True)
class _Alert:
    channel: str
    message: Message


class SlackOutbox:
    """The queue between the bus and Slack. `run()` is the worker, inside the Slack service."""

    def __init__(
        self,
        *,
        state: SupervisionState,
        channel: str,
        alert_channel: str,
        vault_name: str,
        min_interval: float,
        buttons: bool,
        link: OutsideLink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self._channel = channel
        self._alert_channel = alert_channel
        self._vault_name = vault_name
        self._min_interval = min_interval
        self._buttons = buttons
        self._link = link
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()  # dirty threads, oldest first
        self._last_flush: dict[str, float] = {}
        self._alerts: deque[_Alert] = deque()
        self._wake = asyncio.Event()
        self._channel_id: str | None = None  # the main channel's id, once Slack named it
        self.posted = 0  # Slack calls that went through
        self.dropped = 0  # posts given up (errors no retry fixes)

    # -- the producers' side (never waits) -----------------------------------------------

    def add(self, checkpoint: Checkpoint) -> None:
        pending = self._pending.get(checkpoint.action_id)
        if pending is None:
            pending = self._pending[checkpoint.action_id] = _Pending(checkpoint.action_id)
        pending.take(checkpoint)
        self._wake.set()

    def alert(self, title: str, detail: str, status: Status) -> None:
        self._alerts.append(_Alert(self._alert_channel, alert_message(title, detail, status)))
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Threads and alerts waiting to be posted."""
        return len(self._pending) + len(self._alerts)

    # -- the worker ----------------------------------------------------------------------

    async def run(self, client: AsyncWebClient, stop: asyncio.Event) -> None:
        """Post until `stop`; a failure waits the link's backoff and tries the same post again."""
        while not stop.is_set():
            self._wake.clear()
            job, wait = self._next()
            if job is None:
                await _wait_either(self._wake, stop, wait)
                continue
            try:
                if isinstance(job, _Alert):
                    await self._post_alert(client, job)
                else:
                    await self._flush(client, job)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_permanent(error):
                    self.dropped += 1
                    log.error("slack.post_dropped", error=describe_slack_failure(error))
                    continue
                delay = self._link.failed(describe_slack_failure(error))
                if await self._link.wait(delay, stop):
                    return
                continue
            self._link.connected()

    def _next(self) -> tuple[_Alert | str | None, float | None]:
        """The next thing to post, or how long until a thread is due (None: nothing waits)."""
        if self._alerts:
            return self._alerts[0], None
        now = self._clock()
        soonest: float | None = None
        for action_id in self._pending:
            due = self._last_flush.get(action_id, -math.inf) + self._min_interval
            if due <= now:
                return action_id, None
            soonest = due if soonest is None else min(soonest, due)
        if len(self._last_flush) > 4096:  # forget threads quiet for longer than the interval
            self._last_flush = {
                key: at for key, at in self._last_flush.items() if at + self._min_interval > now
            }
        return None, None if soonest is None else max(0.0, soonest - now)

    async def _post_alert(self, client: AsyncWebClient, alert: _Alert) -> None:
        await client.chat_postMessage(channel=alert.channel, **alert.message.as_kwargs())
        self.posted += 1
        self._alerts.popleft()

    async def _flush(self, client: AsyncWebClient, action_id: str) -> None:
        pending = self._pending.pop(action_id)
        self._last_flush[action_id] = self._clock()
        try:
            await self._post(client, pending)
        except BaseException:
            newer = self._pending.pop(action_id, None)
            if newer is not None:
                pending.absorb(newer)
            self._pending[action_id] = pending
            self._pending.move_to_end(action_id, last=False)
            raise

    async def _post(self, client: AsyncWebClient, pending: _Pending) -> None:
        """Top message, reply, retired buttons: each step leaves `pending` without what it posted,
        so that a failure half-way posts only the rest again. The records are read and written in
        a thread: the store is the ledger's database, which the vault's worker holds at times."""
        action_id = pending.action_id
        state = self._state
        ref, view = await asyncio.to_thread(state.thread, action_id)
        view = view or ItemView(action_id)
        view.merge(pending.changes)
        if ref is None or not ref.status_ts:
            ref = await self._open_thread(client, view, ref)
        elif pending.changes:
            await client.chat_update(channel=ref.channel, ts=ref.status_ts, **self._top(view).as_kwargs())
            self.posted += 1
            await asyncio.to_thread(state.remember_thread, action_id, ref, view)
        pending.changes = {}
        if pending.lines:
            decide = pending.decide if self._buttons and view.status == Status.WAITING.value else None
            reply = checkpoint_reply(pending.lines, decide)
            answer = await client.chat_postMessage(
                channel=ref.channel, thread_ts=ref.thread_ts, **reply.as_kwargs()
            )
            self.posted += 1
            if decide:
                text = "\n".join(line for _, line in pending.lines)
                record = DecisionMessage(decide, action_id, ref.channel, str(answer["ts"]), text)
                await asyncio.to_thread(state.remember_decision_message, record)
            pending.lines = []
            pending.decide = None
        while pending.retire:
            plan_id, status, line = pending.retire[0]
            message = await asyncio.to_thread(state.decision_message, plan_id)
            if message is not None and not message.retired:
                await client.chat_update(
                    channel=message.channel,
                    ts=message.ts,
                    **decided_message(message.text, status, line).as_kwargs(),
                )
                self.posted += 1
                message.retired = True
                await asyncio.to_thread(state.remember_decision_message, message)
            pending.retire.pop(0)

    async def _open_thread(self, client: AsyncWebClient, view: ItemView, ref: ThreadRef | None) -> ThreadRef:
        """The item's first post: a new top message in the channel, or, for a Slack message,
        the status reply under the user's own message. Stored at once: a restart goes on in it."""
        top = self._top(view).as_kwargs()
        origin = ref or _slack_origin(view)
        if origin is not None:
            answer = await client.chat_postMessage(channel=origin.channel, thread_ts=origin.thread_ts, **top)
            opened = ThreadRef(origin.channel, origin.thread_ts, str(answer["ts"]))
        else:
            answer = await client.chat_postMessage(channel=self._channel, **top)
            channel_id = str(answer["channel"])
            opened = ThreadRef(channel_id, str(answer["ts"]), str(answer["ts"]))
            if channel_id != self._channel_id:
                self._channel_id = channel_id
                await asyncio.to_thread(self._state.remember_channel_id, self._channel, channel_id)
        self.posted += 1
        await asyncio.to_thread(self._state.remember_thread, view.action_id, opened, view)
        return opened

    def _top(self, view: ItemView) -> Message:
        return top_message(view, self._vault_name)


def _slack_origin(view: ItemView) -> ThreadRef | None:
    """The thread of an item that came from a Slack message: under that message ("channel:ts")."""
    if view.source != "slack":
        return None
    channel, _, ts = view.source_ref.partition(":")
    if channel and ts.replace(".", "", 1).isdigit():
        return ThreadRef(channel, ts)
    return None


async def _wait_either(wake: asyncio.Event, stop: asyncio.Event, seconds: float | None) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
