"""What the matrix records about the kernel the checks ran on (one JSON
object): its release, BTF, headers, how seccomp treats the uretprobe
syscall (leaktrace/probes/uretprobe.py), and the format files of the allocation
tracepoints leaktrace reads (saved as test data: tests/data/tracepoints)."""
from __future__ import annotations

import os
import platform
from typing import Dict

from leaktrace.base.model import KERNEL_KINDS
from leaktrace.probes import features, tracepoints, uretprobe
from leaktrace.probes.kernel import RunningKernel


def tracepoint_formats() -> Dict[str, str]:
    """"group/event" -> its format file, for every event leaktrace may attach."""
    tracefs = features.tracefs_path()
    found = {}
    for spec in tracepoints.KIND_EVENTS.values():
        for group, event in spec.allocs + (spec.free,):
            try:
                with open(os.path.join(tracefs or "/nonexistent", "events", group, event, "format")) as text:
                    found[f"{group}/{event}"] = text.read()
            except OSError:
                continue
    return found


def kernel_mode_plan() -> Dict:
    """What `leaktrace kernel` would trace here, for every kind: its notes and choices."""
    tracefs = features.tracefs_path()
    if tracefs is None:
        return {"notes": ["no tracefs"], "probes": []}
    plan = tracepoints.detect(KERNEL_KINDS, tracefs, RunningKernel())
    return {"notes": list(plan.notes), "probes": list(plan.probes)}


def collect() -> Dict:
    return {
        "release": platform.release(),
        "btf": os.path.exists("/sys/kernel/btf/vmlinux"),
        "headers": os.path.isdir(f"/lib/modules/{platform.release()}/build/include"),
        "accel": os.environ.get("MATRIX_ACCEL", "host"),
        "uretprobe_seccomp": uretprobe.kernel_behaviour(),
        "kernel_mode": kernel_mode_plan(),
        "tracepoints": tracepoint_formats(),
    }
