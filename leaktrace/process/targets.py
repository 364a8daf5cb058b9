"""Facts about processes to trace, read from /proc: does it exist, is it a
kernel thread, is it still running, what is it called."""
from __future__ import annotations

import os
from typing import List

from ..base.errors import TargetError, UsageError

PF_KTHREAD = 0x00200000  # task flag of kernel threads (include/linux/sched.h)


def _stat_fields(pid: int) -> list:
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # comm may hold spaces and parentheses: split after the last ')'.
    head, _, tail = text.rpartition(")")
    return [head.split("(", 1)[1]] + tail.split()


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return ""


def children(pid: int) -> List[int]:
    """PIDs of the processes pid started (its threads' children files); [] once it is gone."""
    found: List[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as listing:
                found.extend(int(word) for word in listing.read().split())
        except (OSError, ValueError):
            continue
    return found


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return _stat_fields(pid)[1] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def check_traceable(pid: int) -> None:
    """Raise a clear error for a PID that cannot be traced in user mode."""
    if pid <= 0:
        raise UsageError(f"invalid PID {pid}", hint="give the PID of a running process")
    try:
        fields = _stat_fields(pid)
    except FileNotFoundError:
        raise TargetError(f"no process with PID {pid}", hint="check the PID with ps or pgrep") from None
    except OSError as exc:
        raise TargetError(f"cannot read /proc/{pid}: {exc.strerror}") from None
    flags = int(fields[8])
    if flags & PF_KTHREAD:
        raise TargetError(
            f"PID {pid} ({fields[0]}) is a kernel thread, it has no user-space allocator",
            hint="trace kernel allocations with: leaktrace kernel",
        )
    if fields[1] in ("Z", "X"):
        raise TargetError(f"PID {pid} ({fields[0]}) has already exited")
