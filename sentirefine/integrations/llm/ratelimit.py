"""A limiter for requests and input tokens per window, shared by concurrent requests.

Why a sliding window and not a classic refilling bucket: the API counts requests and tokens
over the last minute, and a bucket that starts full and refills continuously can spend almost
two windows' worth inside one window. Here every request holds a "slot" (a bucket token that
returns exactly one window after it was spent), so no window ever holds more than ``rpm``
requests or ``tpm`` tokens — while a backlog waits, each slot is reused the moment it returns,
which is what keeps utilisation near 100%.

The server counts a request when it *arrives*, which we cannot see; we know it arrived before
its answer came back, and assume it arrived within ``allowance`` seconds of being sent (a few
KB of upload). So a slot is held while its request is in flight and returns one window after
the earlier of the two: a request that waited longer in the network cannot make a later one
land inside its window, and a slow answer (the model thinking for 5 s) costs no rate.
``allowance = None`` is the fully conservative setting (slots return a window after the answer);
a finite one bets that no upload — the first one opens a connection, TLS included — takes longer.

Token counts are estimated before sending (high) and corrected from ``usage_metadata`` after
the answer (:meth:`RateLimiter.settle`), which gives the over-estimate back at once.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class RequestTooLarge(ValueError):
    """One request alone needs more tokens than a whole window allows: it can never be sent."""


@dataclass
class Slot:
    at: float  # when it returns to the pool, minus the hold time: +inf while in flight
    tokens: int
    sent: float = 0.0


@dataclass
class Usage:
    """What went through the limiter: (send time, tokens) per request, for utilisation metrics."""

    sent: list[Slot] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.sent)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.sent)


def window_fill(events: list[tuple[float, float]], limit: float, window: float, samples: int = 400) -> float:
    """How full the server's sliding window was while a backlog existed, on average.

    The window's content (sum of values sent in ``(t - window, t]``) over ``limit``, averaged over
    evenly spaced times from one window after the first send to the last send: 1.0 = every bit of
    the allowed rate was used. A backlog shorter than a window scores what it used of one window.
    """
    if not events:
        return 0.0
    events = sorted(events)
    times = [t for t, _ in events]
    cumulative = list(itertools.accumulate(v for _, v in events))
    start, end = times[0] + window, times[-1]
    if end <= start:
        return cumulative[-1] / limit

    def content(t: float) -> float:
        hi = bisect.bisect_right(times, t)
        lo = bisect.bisect_right(times, t - window)
        return (cumulative[hi - 1] if hi else 0.0) - (cumulative[lo - 1] if lo else 0.0)

    points = [start + (end - start) * i / (samples - 1) for i in range(samples)]
    return sum(content(t) for t in points) / (limit * samples)


_IN_FLIGHT = float("inf")


class RateLimiter:
    """``slot = await limiter.acquire(tokens)`` before each request, ``settle(slot, n)`` after it."""

    def __init__(self, rpm: int, tpm: int, *, window_s: float = 60.0, margin: float = 0.02,
                 allowance_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm, self.tpm, self.window_s = rpm, tpm, window_s
        self.allowance_s = float("inf") if allowance_s is None else allowance_s
        self._hold = window_s * (1 + margin)  # slots return a little late: server clocks differ
        self._clock = clock
        self._slots: list[Slot] = []
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()
        self._paused_until = 0.0
        self.usage = Usage()

    def _expire(self, now: float) -> None:
        self._slots = [s for s in self._slots if s.at + self._hold > now]

    def _fits(self, tokens: int) -> bool:
        return len(self._slots) < self.rpm and sum(s.tokens for s in self._slots) + tokens <= self.tpm

    async def acquire(self, tokens: int) -> Slot:
        """Wait until one more request of ``tokens`` fits the window, then take its slot."""
        if tokens > self.tpm:
            raise RequestTooLarge(f"one request of ~{tokens} tokens exceeds the tpm limit {self.tpm}")
        async with self._lock:  # waiters are served in arrival order
            while True:
                now = self._clock()
                self._expire(now)
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                if self._fits(tokens):
                    slot = Slot(_IN_FLIGHT, tokens, sent=now)
                    self._slots.append(slot)
                    self.usage.sent.append(slot)
                    return slot
                await self._wait(min(s.at for s in self._slots) + self._hold - now)

    async def _wait(self, seconds: float) -> None:
        """Sleep until a slot returns (``seconds``) or an in-flight request settles, whichever is first."""
        self._settled.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout=max(1e-3, seconds) if seconds < 1e9 else None)

    def settle(self, slot: Slot, actual_tokens: int | None) -> None:
        """The answer came back: start the slot's window and replace its token estimate by the
        server's count (usage_metadata) when known."""
        slot.at = min(self._clock(), slot.sent + self.allowance_s)
        if actual_tokens is not None and actual_tokens >= 0:
            slot.tokens = actual_tokens
        self._settled.set()

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the server said 429 with retry-after)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def utilisation(self) -> dict[str, float]:
        """Mean fill of the rpm and tpm windows while the backlog lasted (see :func:`window_fill`)."""
        sent = self.usage.sent
        return {"rpm_utilisation": round(window_fill([(s.sent, 1) for s in sent], self.rpm, self.window_s), 4),
                "tpm_utilisation": round(window_fill([(s.sent, s.tokens) for s in sent], self.tpm, self.window_s), 4)}
