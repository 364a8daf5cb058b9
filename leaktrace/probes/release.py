"""Detach uprobes so that no signal can leave one behind.

When the last reference to a uprobe (its perf event or BPF link) is closed,
the kernel removes the breakpoint from the target and waits for RCU grace
periods. If a fatal signal is pending for the closing task meanwhile, the
kernel gives up: "failed to unregister, leaking uprobe", and the int3 may
stay in the target's code. A SIGKILL during leaktrace's shutdown did exactly
that. So leaktrace never closes a last reference itself:

  release(fds) starts a helper (`python -m leaktrace.probes.release`, named
  lt-detach) that inherits the fds, in its own session and ignoring the
  terminal's signals; leaktrace then drops its own copies, which is instant
  (not the last reference); the helper closes them all from parallel threads
  (links: ~0.06 s for a session's 22) and exits. wait() waits for it.

Whatever kills leaktrace from then on, the helper finishes the detach; if
leaktrace dies before, its exit closes the fds with no signal pending. Only
killing the helper itself while it closes could still leak, and it lives
for a fraction of a second.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from typing import List, Sequence

HELPER_NAME = b"lt-detach"
WAIT_S = 60  # a detach never takes this long; past it, leaktrace exits anyway
_PR_SET_NAME = 15
_helpers: List[subprocess.Popen] = []


def close_all(fds: Sequence[int]) -> None:
    """Close fds at once from parallel threads: the kernel's grace periods overlap."""
    threads = [threading.Thread(target=os.close, args=(fd,)) for fd in fds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def release(fds: Sequence[int]) -> None:
    """Hand the last reference of each fd to a helper and drop ours; closes
    them here when no helper can be started."""
    fds = list(fds)
    if not fds:
        return
    try:
        helper = subprocess.Popen([sys.executable, "-m", __name__, *map(str, fds)], pass_fds=fds,
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        close_all(fds)
        return
    for fd in fds:
        os.close(fd)  # the helper holds each one: instant
    helper.stdin.close()  # go: leaktrace holds no reference any more
    _helpers.append(helper)


def wait() -> None:
    """Wait until every helper has closed its probes (bounded by WAIT_S)."""
    while _helpers:
        helper = _helpers.pop()
        try:
            helper.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            pass


def _helper(argv: Sequence[str]) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    ctypes.CDLL(None).prctl(_PR_SET_NAME, HELPER_NAME, 0, 0, 0)
    sys.stdin.buffer.read()  # EOF: leaktrace closed its copies (or died)
    close_all([int(fd) for fd in argv])


if __name__ == "__main__":
    _helper(sys.argv[1:])
