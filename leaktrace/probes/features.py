"""What this machine lets us do: privileges, bcc, tracefs, tracepoints.

Each check raises a LeaktraceError subclass with a one-line message and a
hint, so the CLI can print it without a traceback.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import Optional

from ..base import privileges
from ..base.errors import EnvironmentProblem, PermissionProblem
from . import syscall

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_BPF_MAP_TYPE_ARRAY = 2


def check_privileges() -> None:
    """Raise PermissionProblem unless BPF programs can be loaded (root is not enough)."""
    privileges.check_tracing()
    check_bpf_syscall()


def check_bpf_syscall() -> None:
    """Create and close a one-entry BPF map: an EPERM here is a seccomp filter or
    an LSM refusing bpf() (capabilities were checked before)."""
    if not syscall.available():
        return  # bcc will say what fails on this architecture
    try:
        os.close(syscall.bpf(syscall.BPF_MAP_CREATE, struct.pack("=IIII", _BPF_MAP_TYPE_ARRAY, 4, 4, 1)))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise PermissionProblem(
                f"the kernel refused the bpf() system call ({exc.strerror}) although this process "
                "has the capabilities: a seccomp filter or a security module blocks it",
                hint="inside a container run with --privileged (or a seccomp profile that allows "
                     "bpf); check kernel.unprivileged_bpf_disabled and the LSM's policy") from None


def import_bcc():
    """Import bcc or explain how to get it (it is not on PyPI)."""
    try:
        import bcc  # noqa: F401  (the only place outside probes/ that names it)
    except ImportError as exc:
        raise EnvironmentProblem(
            f"the bcc Python module is not importable ({exc})",
            hint="apt-get install python3-bpfcc (bcc is not on PyPI), and create the venv "
            "with --system-site-packages; scripts/setup.sh does both",
        ) from None
    return bcc


def tracefs_path() -> Optional[str]:
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def _mount_tracefs(target: str) -> str:
    """mount(2) tracefs at target; '' on success, else why not (one line)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", target.encode(), b"tracefs", 0, None) == 0:
        return ""
    return os.strerror(ctypes.get_errno())


def ensure_tracefs() -> str:
    """Return the tracefs mount, mounting it when it is missing."""
    path = tracefs_path()
    if path:
        return path
    failure = _mount_tracefs(TRACEFS_CANDIDATES[0])
    path = tracefs_path()
    if path:
        return path
    raise EnvironmentProblem(
        f"tracefs is not mounted at {TRACEFS_CANDIDATES[0]} and mounting it failed"
        + (f" ({failure})" if failure else ""),
        hint="mount -t tracefs tracefs /sys/kernel/tracing as root (in a container: "
        "run with -v /sys/kernel/tracing:/sys/kernel/tracing)",
    )
