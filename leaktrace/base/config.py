"""Frozen settings, split by the stage that reads them.

ProbeConfig is fixed before the BPF program is compiled (each field becomes a
-D define of the same name in upper case: min_size -> MIN_SIZE).
ReportConfig is read by aggregation and the report builder only, so a saved
recording can be re-rendered with other report settings; RunConfig by the
session loop; OutputConfig by the report sinks; ReachConfig by the scanner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

DEFAULT_INTERVAL_S = 5.0
DEFAULT_TOP = 10
DEFAULT_OLDER_THAN_MS = 500
# 2^28 ns (~268 ms): the width of the in-kernel age buckets, so --older-than
# and the age column are accurate to about a quarter second.
DEFAULT_AGE_BUCKET_SHIFT = 28


@dataclass(frozen=True)
class ProbeConfig:
    min_size: int = 0
    max_size: int = 0  # 0 = no upper bound
    sample_rate: int = 0  # bytes per sample; 0 or 1 = record everything
    max_allocs: int = 1 << 20  # outstanding allocations tracked
    max_stacks: int = 1 << 14  # distinct stacks kept
    max_buckets: int = 1 << 17  # (stack, age bucket) totals kept
    age_bucket_shift: int = DEFAULT_AGE_BUCKET_SHIFT
    trace: bool = False  # stream every event to user space
    track_mmap: bool = True
    # Probe the allocator's throwing operator new even where an exception out
    # of it could not unwind (probes/exceptions.py).
    probe_throwing_new: bool = False
    unwind: str = "auto"  # auto | fp | cfi: how user stacks are walked (leaktrace/unwind)
    # Per-thread call state in a tid-keyed hash, as on kernels without task
    # storage for tracing programs (chosen by itself when task storage fails).
    pending_hash: bool = False
    # Trace the processes the targets fork (probes for every process of the
    # hooked objects, filtered in the kernel by the traced set).
    follow_forks: bool = False

    def defines(self) -> dict:
        """The -D settings the BPF source is compiled with."""
        return {
            "MIN_SIZE": self.min_size,
            "MAX_SIZE": self.max_size,
            "SAMPLE_RATE": self.sample_rate if self.sample_rate > 1 else 0,
            "MAX_ALLOCS": self.max_allocs,
            "MAX_STACKS": self.max_stacks,
            "MAX_BUCKETS": self.max_buckets,
            "AGE_BUCKET_SHIFT": self.age_bucket_shift,
            "TRACE_EVENTS": int(self.trace),
            "UNWIND_CFI": int(self.unwind != "fp"),
            "PENDING_HASH": int(self.pending_hash),
            "FOLLOW_FORKS": int(self.follow_forks),
        }


@dataclass(frozen=True)
class ReportConfig:
    top: int = DEFAULT_TOP
    older_than_ms: int = DEFAULT_OLDER_THAN_MS
    show_allocs: bool = False
    group_by: str = "stack"


@dataclass(frozen=True)
class RunConfig:
    """When to report and when to stop."""

    interval_s: float = DEFAULT_INTERVAL_S
    count: Optional[int] = None  # stop after this many reports
    duration_s: Optional[float] = None


@dataclass(frozen=True)
class OutputConfig:
    """Where reports go and how they look: nothing upstream of rendering reads it."""

    format: str = "table"
    path: Optional[str] = None  # -o FILE; None = stdout
    record: Optional[str] = None  # --record FILE: every site of every report
    show_unwind: bool = False


@dataclass(frozen=True)
class ReachConfig:
    """--reachability: when to scan the targets' memory, and how much of it."""

    when: str = ""  # "" (off), "final" or "each" report
    max_bytes: int = 0
