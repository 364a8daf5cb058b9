"""What this machine lets us do: privileges, bcc, tracefs, tracepoints.

Each check raises a LeaktraceError subclass with a one-line message and a
hint, so the CLI can print it without a traceback.
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

from .. import privileges
from ..errors import EnvironmentProblem

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def check_privileges() -> None:
    """Raise PermissionProblem unless BPF programs can be loaded (root is not enough)."""
    privileges.check_tracing()
    privileges.check_bpf_syscall()


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
