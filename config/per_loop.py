"""One value per running event loop: the pooled clients, batchers and background tasks of a process.

An asyncio client, lock or task belongs to the loop that made it, and a process may run
several loops (the ASGI server's, ``async_to_sync``'s, a test's). So each keeps one value per
loop, made on first use in that loop and dropped with it (weakly keyed: a closed loop's
values go when the loop does).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    __slots__ = ("_make", "_values")

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        """How many live loops hold a value."""
        return len(self._values)

    def get(self) -> T:
        """The running loop's value, made on first use (RuntimeError outside a loop)."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._make()
        return value

    def peek(self, loop: asyncio.AbstractEventLoop | None = None) -> T | None:
        """``loop``'s value (default: the running loop's; None outside one) without making it."""
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return None
        return self._values.get(loop)

    def set(self, value: T) -> T:
        """Replace the running loop's value."""
        self._values[asyncio.get_running_loop()] = value
        return value

    def pop(self) -> T | None:
        """Forget the running loop's value (None outside a loop, or when there was none)."""
        try:
            return self._values.pop(asyncio.get_running_loop(), None)
        except RuntimeError:
            return None


class LoopTask:
    """A loop's background task, started again when it has ended (``PerLoop(LoopTask)``, or a
    per-loop state that subclasses it)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None

    def keep(self, start: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        """Run ``start()`` as this object's task unless its task is still running."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(start(), name=name)
            self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # An ended task still references its loop: kept here, it would keep the loop (the key
        # of the weak map this object is a value of) alive for good.
        if self.task is task:
            self.task = None
