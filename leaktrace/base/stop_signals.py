"""Stop signals taken over for the length of a trace.

A signal the caller ignores stays ignored: under `nohup` (or a shell's `&`,
which ignores SIGINT) a hang-up must not stop leaktrace, and the command
`run` started inherited the same disposition, so passing the signal on
would not stop it either; it would only be ended after a grace period.
"""
from __future__ import annotations

import signal
from typing import Callable, Dict, Iterable


def take(signals: Iterable[int], handler: Callable) -> Callable[[], None]:
    """Install handler for each signal not ignored; returns what restores them."""
    previous: Dict[int, object] = {}
    for signum in signals:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)
    return restore
