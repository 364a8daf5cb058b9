"""The agent's settings, and the parsers that turn its options into them.

Defaults suit a production node: sample every 10 s, judge growth over a
10-minute window, trace a suspect for 60 s, leave it alone for 30 minutes.
Tests pass seconds instead; nothing else changes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

from leaktrace.base.errors import UsageError

MiB = 1 << 20
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": MiB, "mb": MiB, "mib": MiB,
               "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


@dataclass(frozen=True)
class AgentConfig:
    listen: Tuple[str, int] = ("127.0.0.1", 9464)
    out_dir: str = "/var/lib/leaktrace/agent"
    budget: float = 0.02  # share of the host's CPU time the probes may use
    period_s: float = 10.0  # between two samples of /proc
    window_s: float = 600.0  # growth is fitted over this long before anything is judged
    min_growth: int = MiB  # growth over the window below this is noise
    trace_s: float = 60.0  # how long one escalation traces
    interval_s: float = 5.0  # between the reports of an escalation
    cooldown_s: float = 1800.0  # a target is not traced again for this long
    sample_rate: int = 0  # bytes per sample of the first trace of a target (0: every allocation)
    retain: int = 20  # escalations whose evidence is kept
    max_out_bytes: int = 256 * MiB  # evidence kept, all escalations and the event log together
    export_top: int = 10  # series per metric family for processes, cgroups and caches
    escalate: bool = True
    targets: Tuple[str, ...] = ("process", "slab", "vmalloc", "percpu")  # what may be traced
    cgroup: str = ""  # only processes whose cgroup v2 path starts with this
    reach_max_bytes: int = 0  # --reachability: scan a process at the end of its trace (0: never)
    duration_s: Optional[float] = None  # stop after this long (None: until SIGTERM)


def parse_budget(text: str) -> float:
    """'2%' or '0.02' -> 0.02."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
    share = float(match.group(1)) / (100 if match.group(2) else 1) if match else -1.0
    if not 0 < share <= 1:
        raise UsageError(f"--budget {text!r} is not a share of CPU time",
                         hint="write it like 2% or 0.02 (more than 0, at most 100%)")
    return share


def parse_listen(text: str) -> Tuple[str, int]:
    """'127.0.0.1:9464', ':9464' (all addresses) or '[::1]:9464' -> (host, port)."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(\d{1,5})", text.strip())
    port = int(match.group(2)) if match else -1
    if not 0 < port < 65536:
        raise UsageError(f"--listen {text!r} is not HOST:PORT",
                         hint="write it like 127.0.0.1:9464, :9464 (every address) or [::1]:9464")
    return match.group(1).strip("[]") or "0.0.0.0", port


def parse_size(text: str, option: str) -> int:
    """'256MiB', '64k', '1048576' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if unit not in _SIZE_UNITS:
        raise UsageError(f"{option} {text!r} is not a size", hint="write it like 1MiB, 64k or 4096")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])
