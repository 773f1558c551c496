"""Which waiting request goes to the engine next.

An engine keeps the evaluated tokens of the prompt it served last (llama.cpp's server: one slot, its prompt cache)
and evaluates again only what follows the beginning a new prompt shares with it. The requests of a generation job
share long beginnings: every request of one agent step starts with the same few-shot template, and a dialogue's
next turn starts with its previous one. Sent first come, first served, the steps of concurrent dialogues
interleave and each request evicts the beginning the next one needed.

:class:`PrefixGate` bounds the requests in flight (like a semaphore) and, when a slot frees, hands it to the
waiting request whose prompt shares the longest beginning with the prompt sent last; equals go in arrival order,
and a request passed over ``max_skips`` times goes next, so none waits for ever. With nothing waiting a request
goes at once: the order changes, never the requests or their replies.

A freed slot is handed on one turn of the event loop later, not at once: the dialogue whose reply just came back
asks its next question in that turn when it needs nothing else first (the solution after the problem, the fix
after the explanation), and that question begins with the prompt just served, so it goes next and the engine
evaluates only its new end instead of another dialogue's whole prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

ORDERS = ("prefix", "fifo")


def shared_prefix(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share (a binary search over slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass(eq=False)
class _Waiter:
    text: str
    granted: asyncio.Future[None]
    skips: int = 0


@dataclass
class GateStats:
    """How the gate ordered a job's requests: ``shared_chars`` of ``sent_chars`` began like the prompt before."""

    sent: int = 0
    sent_chars: int = 0
    shared_chars: int = 0
    reordered: int = 0  # requests that went before one that had waited longer

    def to_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "sent_chars": self.sent_chars, "shared_chars": self.shared_chars,
                "reordered": self.reordered}  # fmt: skip


@dataclass
class PrefixGate:
    slots: int
    order: str = "prefix"
    max_skips: int = 8
    stats: GateStats = field(default_factory=GateStats)

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r} (one of {', '.join(ORDERS)})")
        self._free = self.slots
        self._waiting: list[_Waiter] = []
        self._last = ""

    @asynccontextmanager
    async def slot(self, text: str) -> AsyncIterator[None]:
        """Hold one of the slots while the request for ``text`` (its prompt, or its messages) is in flight."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            self._sent(text)
        else:
            waiter = _Waiter(text, asyncio.get_running_loop().create_future())
            self._waiting.append(waiter)
            try:
                await waiter.granted
            except asyncio.CancelledError:
                if waiter.granted.done() and not waiter.granted.cancelled():
                    self._release()  # handed a slot as it was cancelled: pass it on
                else:
                    self._waiting.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def _sent(self, text: str) -> None:
        self.stats.sent += 1
        self.stats.sent_chars += len(text)
        self.stats.shared_chars += shared_prefix(self._last, text)
        self._last = text

    def _release(self) -> None:
        if self.order == "prefix":  # let the request that just ended send its follow-up first (module docstring)
            asyncio.get_running_loop().call_soon(self._hand_on)
        else:
            self._hand_on()

    def _hand_on(self) -> None:
        if not self._waiting:
            self._free += 1
            return
        index = self._next()
        waiter = self._waiting.pop(index)
        if index:
            self.stats.reordered += 1
        for w in self._waiting[:index]:
            w.skips += 1
        self._sent(waiter.text)
        waiter.granted.set_result(None)

    def _next(self) -> int:
        if self.order == "fifo" or len(self._waiting) == 1 or self._waiting[0].skips >= self.max_skips:
            return 0
        shared = [shared_prefix(self._last, w.text) for w in self._waiting]
        return max(range(len(shared)), key=lambda i: (shared[i], -i))
