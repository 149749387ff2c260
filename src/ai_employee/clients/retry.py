"""The one retry policy for outside HTTP services (Atlas, Manus).

What is retried, and why:
- 429 and 5xx answers: the service is busy or broken for a moment.
- Transport errors (connection refused or dropped, timeouts).
- Never 4xx validation errors: sending the same body again gets the same answer.

A request that may have reached the service before its answer was lost (a dropped
connection, a read timeout, a 5xx) is only retried when it is safe: reads, whole-object
PATCHes, and creates that look for their own marker before sending again. Callers say
which by choosing `is_transient` or `is_unsent`.

Waits grow exponentially with random jitter, so that many workers retrying together do
not hit the service in lockstep; a `Retry-After` header, when sent, is honoured as a floor.

Every attempt has its deadlines (`timeouts`): connect (`services.connect_timeout`) and read,
write and pool (the service's own timeout), so a server that accepts and never answers costs
a bounded wait, and the attempts are bounded too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ai_employee.clients.link import describe_failure
from ai_employee.config import ServicesSettings

log = structlog.get_logger(__name__)

T = TypeVar("T")


class ServiceError(Exception):
    """Base of every client error: `str()` is a message fit for a human (no secrets)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServiceRejected(ServiceError):
    """The service refused the request (4xx, or a 5xx that is the caller's fault): do not retry."""


class ServiceAuthError(ServiceRejected):
    """Credentials are wrong or not allowed to do this."""


class ServiceUnavailable(ServiceError):
    """The service stayed busy, broken or unreachable through every retry."""


class TransientStatus(ServiceError):
    """A 429 or 5xx answer, raised inside one attempt so that the policy can retry it."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


def is_unsent(error: BaseException) -> bool:
    """Retry only what certainly did not take effect: no connection, or 429 (refused up front)."""
    if isinstance(error, TransientStatus):
        return error.status == 429
    return isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def is_transient(error: BaseException) -> bool:
    """Retry any 429, 5xx or transport failure: for requests that are safe to repeat."""
    return isinstance(error, TransientStatus | httpx.TransportError)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def describe(error: BaseException) -> str:
    """A short human description of a failure, never containing request headers: a transport
    failure in plain words, with the deadline that struck ("no answer after 30 s")."""
    if isinstance(error, ServiceError):
        return error.message
    if isinstance(error, httpx.TransportError):
        return describe_failure(error, timeout=_deadlines_of(error))
    return f"{type(error).__name__}: {error}"


def _deadlines_of(error: httpx.TransportError) -> httpx.Timeout | None:
    """The timeouts the failed request ran with (httpx keeps them in the request's extensions)."""
    try:
        request = error.request
    except RuntimeError:  # raised without a request
        return None
    given = request.extensions.get("timeout")
    if not isinstance(given, dict):
        return None
    try:
        return httpx.Timeout(**given)
    except (TypeError, ValueError):
        return None


def timeouts(*, connect: float, read: float) -> httpx.Timeout:
    """An attempt's deadlines: reaching the server (connect, TLS handshake; a free pooled
    connection) within `connect`, and each read or write once connected within `read`."""
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry. Tests pass a fast one; production uses the default."""

    attempts: int = 5
    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    jitter_seconds: float = 1.0
    max_retry_after_seconds: float = 120.0

    @classmethod
    def for_services(cls, services: ServicesSettings) -> RetryPolicy:
        """The policy of the daemon's clients: the first wait is half of `services.initial_backoff`
        (with as much jitter), the longest `services.max_backoff`, at most 30 s."""
        return cls(
            initial_seconds=services.initial_backoff / 2,
            max_seconds=min(30.0, services.max_backoff),
            jitter_seconds=services.initial_backoff,
        )

    def _wait(self) -> Callable[[RetryCallState], float]:
        backoff = wait_exponential_jitter(
            multiplier=self.initial_seconds, max=self.max_seconds, jitter=self.jitter_seconds
        )

        def wait(state: RetryCallState) -> float:
            seconds = float(backoff(state))
            outcome = state.outcome
            error = outcome.exception() if outcome is not None and outcome.failed else None
            if isinstance(error, TransientStatus) and error.retry_after is not None:
                seconds = max(seconds, min(error.retry_after, self.max_retry_after_seconds))
            return seconds

        return wait

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        what: str,
        retry_on: Callable[[BaseException], bool] = is_transient,
    ) -> T:
        """Run `operation` until it succeeds, fails for good, or the attempts are spent.

        Exhausted transient failures become ServiceUnavailable carrying the last reason;
        anything `retry_on` refuses propagates unchanged at once.
        """

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            log.warning(
                "retrying",
                what=what,
                attempt=state.attempt_number,
                reason=describe(error) if error is not None else None,
                wait_seconds=round(state.upcoming_sleep, 3),
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, self.attempts)),
            wait=self._wait(),
            retry=retry_if_exception(retry_on),
            before_sleep=before_sleep,
            reraise=False,
        )
        try:
            return await retrying(operation)
        except httpx.TransportError as error:
            # Not retried because it may have taken effect (the answer was lost, not the request).
            raise ServiceUnavailable(
                f"{what} failed: {describe(error)}; not repeated, as it may already have taken effect"
            ) from error
        except RetryError as exhausted:
            last = exhausted.last_attempt.exception()
            reason = describe(last) if last is not None else "unknown failure"
            status = last.status if isinstance(last, ServiceError) else None
            raise ServiceUnavailable(
                f"{what} failed after {self.attempts} attempts: {reason}", status=status
            ) from last
