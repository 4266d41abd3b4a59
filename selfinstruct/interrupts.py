"""Clean stops on SIGINT, SIGTERM and SIGHUP, the same way at every moment of a job.

* In synchronous code (reading inputs, starting the embedded model or a vLLM server) a signal
  raises `Interrupted`, which unwinds through every `with` and `finally` like any exception.
* Sections that must not be cut (launching a server, stopping it) are `deferred()`: a signal
  inside is raised when the section ends.
* Inside the event loop a signal is never raised in the middle of library code: the loop's own
  signal handling cancels the main task (`run_async`), so requests in flight are cancelled, the
  stages' `finally` blocks save what arrived, and `Interrupted` is raised once the loop is done.
* A second signal while stopping ends the process at once (`os._exit`), after killing whatever
  registered itself with `on_hard_exit` (the process groups of started servers): records are
  written and flushed one at a time, so nothing already received is lost.

The CLI turns `Interrupted` into one line on stderr and exit code 128 + the signal number
(130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
T = TypeVar("T")


class Interrupted(BaseException):
    """The job was asked to stop by a signal. A BaseException, so `except Exception` lets it pass."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_received: int | None = None
_armed = False
_deferred = 0
_hard_exit_hooks: list[Callable[[], None]] = []


def install() -> None:
    """Take over SIGINT, SIGTERM and SIGHUP for this process (the CLI calls it first thing)."""
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)


def ignore() -> None:
    """The job is over and its exit code decided: a late signal (the interpreter may take a moment to
    shut down, and restores default handlers as it does) changes nothing."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextmanager
def armed() -> Iterator[None]:
    """The job itself: a signal inside raises Interrupted. Outside (before the job starts, while the
    CLI reports its end) a signal is only recorded."""
    global _armed
    if _received is not None:  # asked to stop before the job began
        raise Interrupted(_received)
    _armed = True
    try:
        yield
    finally:
        _armed = False


def _note(signum: int) -> None:
    """Record a signal; a second one ends the process at once."""
    global _received
    if _received is not None:
        _hard_exit(signum)
    _received = signum


def _on_signal(signum: int, frame: Any) -> None:
    _note(signum)
    if _armed and not _deferred:
        raise Interrupted(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Run a section whole: a signal received inside is raised when it ends."""
    global _deferred
    _deferred += 1
    try:
        yield
    except BaseException:
        _deferred -= 1
        raise
    _deferred -= 1
    if _armed and not _deferred and _received is not None:
        raise Interrupted(_received)


def on_hard_exit(hook: Callable[[], None]) -> Callable[[], None]:
    """Call `hook` before a second signal ends the process; returns a function that unregisters it."""
    _hard_exit_hooks.append(hook)
    return lambda: _hard_exit_hooks.remove(hook) if hook in _hard_exit_hooks else None


def _hard_exit(signum: int) -> None:
    for hook in list(_hard_exit_hooks):
        try:
            hook()
        except Exception:  # noqa: BLE001  (exiting anyway; the next hook may still help)
            pass
    os.write(sys.stderr.fileno(), b"interrupted again: stopped at once; records written so far are kept\n")
    os._exit(128 + signum)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with the signals cancelling the main task rather than raising inside it."""
    import asyncio  # here, so that installing the handlers comes first when the CLI starts

    return asyncio.run(_cancel_on_signals(coro))


async def _cancel_on_signals(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def cancel(signum: int) -> None:
        _note(signum)
        task.cancel()

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        loop.add_signal_handler(sig, cancel, sig)
    try:
        result = await coro
    except asyncio.CancelledError:
        if _received is None:
            raise
        raise Interrupted(_received) from None
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous[sig])
    if _received is not None:  # the coroutine finished its cleanup without re-raising
        raise Interrupted(_received)
    return result
