"""Kernels that would kill a seccomp-filtered target at its first uretprobe.

Since Linux 6.11 a uretprobe returns through the uretprobe syscall (x86-64:
335), called from a kernel-made trampoline in the traced process. Until the
fix "seccomp: passthrough uretprobe systemcall without filtering" (Feb 2025:
6.14, backported to 6.12 and 6.13 stable; 6.11 had reached its end before),
seccomp filtered that call like any other: a process whose filter does not
allow it (systemd's services, sandboxed daemons) dies with SIGSYS or SIGILL at
the first return of a traced function.

Detected by behaviour, not version: in a child process, the syscall called
directly dies with SIGILL where it exists (it is only valid from the
trampoline), ENOSYS where it does not; called again under a filter that
answers it with a marker errno, a fixed kernel still delivers SIGILL (the
filter was skipped) and an affected one returns the marker.
"""
from __future__ import annotations

import ctypes
import errno
import faulthandler
import os
import platform
import resource
import signal
import struct
from functools import lru_cache
from typing import Iterable, Optional

from ..base.errors import EnvironmentProblem

URETPROBE_NR = 335  # arch/x86/entry/syscalls/syscall_64.tbl
_MARKER_ERRNO = 1234
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_SECCOMP_RET_ERRNO, _SECCOMP_RET_ALLOW = 0x00050000, 0x7FFF0000
# Outcomes of the direct call, by child exit status.
_EXIT_ENOSYS, _EXIT_MARKER, _EXIT_OTHER = 10, 11, 12


def classify(direct: str, filtered: str) -> str:
    """"absent" (no uretprobe syscall), "passthrough" (seccomp skips it: safe),
    "filtered" (seccomp filters it: a filtered target dies) or "unknown", from
    the outcomes ("sigill", "enosys", "marker", "other") of the two calls."""
    if direct == "enosys":
        return "absent"
    if direct != "sigill":
        return "unknown"
    return {"sigill": "passthrough", "marker": "filtered"}.get(filtered, "unknown")


def _filter_program() -> bytes:
    """Classic BPF: the uretprobe syscall gets the marker errno, the rest runs."""
    insns = [(0x20, 0, 0, 0),  # ld [0]: seccomp_data.nr
             (0x15, 0, 1, URETPROBE_NR),  # jeq #335, next, skip
             (0x06, 0, 0, _SECCOMP_RET_ERRNO | _MARKER_ERRNO),
             (0x06, 0, 0, _SECCOMP_RET_ALLOW)]
    return b"".join(struct.pack("<HBBI", *insn) for insn in insns)


def _child(filtered: bool) -> None:
    """Runs in the forked child; never returns. Its SIGILL is expected: no
    core file, no fault handler report."""
    try:
        faulthandler.disable()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        libc = ctypes.CDLL(None, use_errno=True)
        if filtered:
            program = ctypes.create_string_buffer(_filter_program())
            fprog = struct.pack("<HxxxxxxQ", 4, ctypes.addressof(program))
            if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or \
                    libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0):
                os._exit(_EXIT_OTHER)
        libc.syscall(URETPROBE_NR)
        code = ctypes.get_errno()
        os._exit(_EXIT_ENOSYS if code == errno.ENOSYS else _EXIT_MARKER if code == _MARKER_ERRNO
                 else _EXIT_OTHER)
    finally:
        os._exit(_EXIT_OTHER)


def _call(filtered: bool) -> str:
    pid = os.fork()
    if pid == 0:
        _child(filtered)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "sigill" if os.WTERMSIG(status) == signal.SIGILL else "other"
    return {_EXIT_ENOSYS: "enosys", _EXIT_MARKER: "marker"}.get(os.WEXITSTATUS(status), "other")


@lru_cache(maxsize=1)
def kernel_behaviour() -> str:
    """classify() for the running kernel (x86-64 only: elsewhere "absent")."""
    if platform.machine() != "x86_64":
        return "absent"
    return classify(_call(False), _call(True))


def seccomp_filtered(pid: int, proc: str = "/proc") -> Optional[bool]:
    """Whether any thread of pid runs under a seccomp filter; None if unreadable."""
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
        modes = [_seccomp_mode(f"{proc}/{pid}/task/{tid}/status") for tid in tids]
    except OSError:
        return None
    return any(mode == _SECCOMP_MODE_FILTER for mode in modes)


def _seccomp_mode(status_path: str) -> int:
    with open(status_path) as status:
        for line in status:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return 0


def check_targets(pids: Iterable[int], behaviour=kernel_behaviour, filtered=seccomp_filtered) -> None:
    """Refuse, in one line, to trace a seccomp-filtered process on a kernel
    that would kill it at the first uretprobe."""
    at_risk = [pid for pid in pids if filtered(pid)]
    if at_risk and behaviour() == "filtered":
        raise EnvironmentProblem(
            f"kernel {platform.release()} runs the uretprobe syscall through seccomp (6.11 until "
            f"the Feb 2025 fix) and process {at_risk[0]} has a seccomp filter: it would be killed "
            "at the first return of a traced function",
            hint="allow syscall 335 (uretprobe) in its filter (systemd 257+ does: SystemCallFilter), "
            "or run a kernel with the fix (6.12.y/6.13.y stable updates, 6.14+)")
