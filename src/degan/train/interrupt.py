"""Ctrl-C and SIGTERM during training: finish the current iteration, write a checkpoint of that moment, stop.

:func:`stop_on_signals` installs handlers for SIGINT and SIGTERM that only set a flag; the training loop
(:func:`degan.train.loop.run_with_callbacks`) asks ``trainer.stop_requested()`` after each iteration and raises
:class:`~degan.train.loop.StopRequested`, and the stage writes a checkpoint of the consistent state between two
iterations (``--resume latest`` then continues bit-identically) before exiting with :class:`~degan.errors.Interrupted`.
A second Ctrl-C stops at once (``KeyboardInterrupt``; the newest periodic checkpoint is kept).

Only in the main thread of a single process: under ``torchrun`` each rank would see the signal at another iteration,
so multi-process runs keep the default behaviour (stop at once; resume from the newest periodic checkpoint).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["stop_on_signals"]


@contextlib.contextmanager
def stop_on_signals(log: Callable[[str], None] = print, enabled: bool = True) -> Iterator[Callable[[], str | None]]:
    """While active, SIGINT / SIGTERM request a stop instead of killing the process.

    Yields:
        ``requested() -> str | None``: the name of the first signal received (``"SIGINT"``), or None.
    """
    received: list[str] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if received and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        if not received:
            log(f"\n[degan] {name}: stopping after this iteration and writing a checkpoint (Ctrl-C again to stop at "
                "once)")
        received.append(name)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
