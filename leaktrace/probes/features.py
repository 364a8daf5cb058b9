"""What this machine lets us do: privileges, bcc, tracefs, tracepoints.

Each check raises a LeaktraceError subclass with a one-line message and a
hint, so the CLI can print it without a traceback.
"""
from __future__ import annotations

import os
import subprocess
from typing import Optional

from ..errors import PRIVILEGE_HINT, EnvironmentProblem, PermissionProblem

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# Capability bits (linux/capability.h).
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def check_privileges() -> None:
    caps = _effective_caps()
    has_admin = caps & (1 << CAP_SYS_ADMIN)
    has_bpf = caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON)
    if os.geteuid() != 0 and not (has_admin or has_bpf):
        raise PermissionProblem("tracing needs root or CAP_BPF and CAP_PERFMON", hint=PRIVILEGE_HINT)


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


def ensure_tracefs() -> str:
    """Return the tracefs mount, mounting it when it is missing."""
    path = tracefs_path()
    if path:
        return path
    mount = subprocess.run(
        ["mount", "-t", "tracefs", "tracefs", TRACEFS_CANDIDATES[0]],
        capture_output=True,
        text=True,
    )
    path = tracefs_path()
    if path:
        return path
    raise EnvironmentProblem(
        "tracefs is not mounted and could not be mounted"
        + (f" ({mount.stderr.strip()})" if mount.stderr.strip() else ""),
        hint="mount -t tracefs tracefs /sys/kernel/tracing (in a container: "
        "run with -v /sys/kernel/tracing:/sys/kernel/tracing)",
    )
