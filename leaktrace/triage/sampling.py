"""Reads /proc (or a captured copy of it) into triage Samples.

Contract: read_sample(proc_root) reads one instant; sample_window() reads
`count` samples spread evenly over a window; read_capture(directory) reads a
saved sequence of /proc trees (sample-0/, sample-1/, ... plus slab/ for
/sys/kernel/slab). A file the caller may not read (slabinfo and vmallocinfo
without root) becomes None plus a sentence in Capture.missing; a process that
exits while it is read is left out of that sample. Only an unreadable
/proc/meminfo is fatal (EnvironmentProblem).
"""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from leaktrace.base.errors import EnvironmentProblem
from leaktrace.triage import procfs
from leaktrace.process.cgroups import container_with_name
from leaktrace.triage.procfs import Capture, ProcessMemory, Sample

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SYS_SLAB = Path("/sys/kernel/slab")
MISSING_SLABINFO = (
    "slab caches: /proc/slabinfo is readable only by root, so slab growth is "
    "known only as totals from /proc/meminfo"
)
MISSING_VMALLOCINFO = (
    "vmalloc callers: /proc/vmallocinfo is readable only by root, so vmalloc "
    "growth is known only as a total"
)
# Caches created with SLAB_RECLAIM_ACCOUNT, for when sysfs cannot say.
_RECLAIMABLE_NAMES = ("dentry", "inode_cache", "radix_tree_node", "buffer_head")


def _read_optional(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except OSError:  # EACCES without root, ENOENT when not built in
        return None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def read_process(directory: Path, exact: bool = True) -> Optional[ProcessMemory]:
    """One process's memory, or None if it exited or is a kernel thread.
    exact reads smaps_rollup (walks every mapping) instead of status alone."""
    try:
        status = (directory / "status").read_text()
        cgroup = _read_optional(directory / "cgroup") or ""
        rollup = _read_optional(directory / "smaps_rollup") if exact else None
    except OSError:  # exited between listing and reading
        return None
    name, rss, anon = procfs.parse_status(status)
    if rollup:  # more exact (counts THP); absent for other users' processes
        rss, anon = procfs.parse_smaps_rollup(rollup)
    if rss == 0:  # kernel threads and zombies hold no user memory
        return None
    stat = _read_optional(directory / "stat")  # absent in saved captures: age unknown
    started = procfs.parse_start_time(stat, TICKS_PER_S) if stat else None
    # Only an interpreter or the entry script can be leaktrace: skip the others' cmdline.
    tool = name.startswith(("python", "leaktrace")) and procfs.is_leaktrace(
        _read_bytes(directory / "cmdline"))
    return ProcessMemory(int(directory.name), name, rss, anon, container_with_name(cgroup),
                         started, tool, procfs.cgroup_path(cgroup))


def read_sample(proc_root: Path = PROC, page_size: int = 0, skip_pid: int = 0,
                exact: bool = True) -> Sample:
    """One instant; skip_pid leaves out a process (the sampler itself)."""
    page_size = page_size or resource.getpagesize()
    try:
        uptime = procfs.parse_uptime((proc_root / "uptime").read_text())
        meminfo = procfs.parse_meminfo((proc_root / "meminfo").read_text())
    except (OSError, ValueError, IndexError) as error:
        raise EnvironmentProblem(
            f"cannot read {proc_root}/meminfo or uptime: {error}",
            hint="triage needs procfs; mount it with `mount -t proc proc /proc`",
        ) from error
    slabinfo = _read_optional(proc_root / "slabinfo")
    vmallocinfo = _read_optional(proc_root / "vmallocinfo")
    processes = {}
    for entry in proc_root.iterdir():
        if entry.name.isdigit() and entry.name != str(skip_pid):
            process = read_process(entry, exact)
            if process is not None:
                processes[process.pid] = process
    return Sample(
        time_s=uptime,
        meminfo=meminfo,
        slabs=procfs.parse_slabinfo(slabinfo, page_size) if slabinfo is not None else None,
        vmalloc=procfs.parse_vmallocinfo(vmallocinfo, page_size)
        if vmallocinfo is not None
        else None,
        processes=processes,
    )


def slab_reclaimable(names: Iterable[str], sys_slab: Path = SYS_SLAB) -> Dict[str, bool]:
    """Whether each cache is reclaimable: sysfs reclaim_account, else its name."""
    flags = {}
    for name in names:
        text = _read_optional(sys_slab / name / "reclaim_account")
        if text is not None and text.strip() in ("0", "1"):
            flags[name] = text.strip() == "1"
        else:
            flags[name] = name.endswith(_RECLAIMABLE_NAMES)
    return flags


def _missing(samples: List[Sample]) -> tuple:
    notes = []
    if any(s.slabs is None for s in samples):
        notes.append(MISSING_SLABINFO)
    if any(s.vmalloc is None for s in samples):
        notes.append(MISSING_VMALLOCINFO)
    return tuple(notes)


def _capture(samples: List[Sample], sys_slab: Path) -> Capture:
    names = set()
    for sample in samples:
        names.update(sample.slabs or ())
    return Capture(tuple(samples), slab_reclaimable(sorted(names), sys_slab), _missing(samples))


def sample_window(
    window_s: float,
    count: int,
    proc_root: Path = PROC,
    sys_slab: Path = SYS_SLAB,
    sleep: Callable[[float], None] = time.sleep,
) -> Capture:
    """`count` samples, the first now and the last window_s later."""
    start = time.monotonic()
    samples = []
    for index in range(count):
        # Deadlines from the start, so slow reads do not stretch the window.
        delay = start + window_s * index / (count - 1) - time.monotonic()
        if delay > 0:
            sleep(delay)
        # The sampler's own memory grows with the samples it holds: not a leak.
        samples.append(read_sample(proc_root, skip_pid=os.getpid()))
    return _capture(samples, sys_slab)


def read_capture(directory: Path) -> Capture:
    """A saved capture: directory/sample-N/ are /proc trees, directory/slab/ sysfs."""
    trees = sorted(directory.glob("sample-*"), key=lambda p: int(p.name.split("-")[1]))
    if not trees:
        raise EnvironmentProblem(
            f"no sample-N directories in {directory}",
            hint="a capture holds sample-0/, sample-1/, ... each a copy of /proc",
        )
    return _capture([read_sample(tree, procfs.PAGE_SIZE) for tree in trees], directory / "slab")
