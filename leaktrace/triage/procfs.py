"""Parsed /proc samples for triage, and the pure parsers that build them.

Contract: every parse_* function takes the text of one /proc file and returns
plain values in bytes; none reads a file. A Sample is one instant of the
whole machine; a Capture is the sequence sampled over a window plus what
could not be read. verdicts.py takes these and nothing else, so captured
/proc trees and live sampling go through the same code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from leaktrace.base.model import Container

PAGE_SIZE = 4096


@dataclass(frozen=True)
class SlabCache:
    bytes: int  # memory held by the cache's slabs (what slabtop calls CACHE SIZE)
    objects: int  # active objects
    object_size: int
    slots: int = 0  # objects its slabs have room for: no more can be allocated from it


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    comm: str
    rss: int
    anon: int
    container: Optional[Container] = None
    started_s: Optional[float] = None  # seconds after boot (the clock of /proc/uptime); None: unknown
    leaktrace: bool = False  # a leaktrace process: never ranked as a grower
    cgroup: str = ""  # cgroup v2 path, e.g. /system.slice/nginx.service


@dataclass(frozen=True)
class Sample:
    time_s: float  # /proc/uptime when the sample started
    meminfo: Mapping[str, int]
    # None when the file could not be read (non-root): never an empty guess.
    slabs: Optional[Mapping[str, SlabCache]]
    vmalloc: Optional[Mapping[str, int]]  # caller -> bytes of vmalloc'ed pages
    processes: Mapping[int, ProcessMemory]


@dataclass(frozen=True)
class Capture:
    samples: Tuple[Sample, ...]
    slab_reclaimable: Mapping[str, bool] = field(default_factory=dict)
    missing: Tuple[str, ...] = ()  # what could not be read, one sentence each


def parse_uptime(text: str) -> float:
    return float(text.split()[0])


def parse_meminfo(text: str) -> Dict[str, int]:
    """/proc/meminfo as bytes per field (HugePages_* counts stay counts)."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        unit = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
        values[key.strip()] = int(parts[0]) * unit
    return values


def parse_slabinfo(text: str, page_size: int = PAGE_SIZE) -> Dict[str, SlabCache]:
    """/proc/slabinfo (version 2.1) as cache name -> SlabCache."""
    caches = {}
    for line in text.splitlines():
        if line.startswith(("slabinfo", "#")) or ":" not in line:
            continue
        head, _, rest = line.partition(":")
        fields = head.split()
        slabdata = rest.partition("slabdata")[2].split()
        if len(fields) < 6 or len(slabdata) < 2:
            continue
        name, active, total, objsize, _perslab, pages_per_slab = fields[:6]
        num_slabs = int(slabdata[1])
        caches[name] = SlabCache(
            bytes=num_slabs * int(pages_per_slab) * page_size,
            objects=int(active),
            object_size=int(objsize),
            slots=int(total),
        )
    return caches


_CALLER = re.compile(r"^([A-Za-z0-9_.$]+)\+0x[0-9a-f]+/0x[0-9a-f]+")


def parse_vmallocinfo(text: str, page_size: int = PAGE_SIZE) -> Dict[str, int]:
    """/proc/vmallocinfo as caller function -> bytes of pages it holds.

    Only areas with `pages=N` count: ioremap and vmap ranges of existing pages
    cost no new memory, and VmallocUsed in /proc/meminfo counts pages alike.
    """
    callers: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        pages = next((p for p in parts if p.startswith("pages=")), None)
        if pages is None or len(parts) < 3:
            continue
        match = _CALLER.match(parts[2])
        caller = match.group(1) if match else "[unknown]"
        callers[caller] = callers.get(caller, 0) + int(pages[6:]) * page_size
    return callers


def parse_smaps_rollup(text: str) -> Tuple[int, int]:
    """(rss, anonymous) bytes from /proc/PID/smaps_rollup."""
    values = parse_meminfo(text)
    return values.get("Rss", 0), values.get("Anonymous", 0)


def cgroup_path(text: str) -> str:
    """The cgroup v2 path in /proc/PID/cgroup ("0::/path"), or "" on v1-only hosts."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return ""


def parse_start_time(stat: str, ticks_per_s: int) -> float:
    """When the process started, in seconds after boot, from /proc/PID/stat."""
    fields = stat.rpartition(")")[2].split()  # comm may hold spaces and parentheses
    return int(fields[19]) / ticks_per_s  # field 22, starttime, in clock ticks


def is_leaktrace(cmdline: bytes) -> bool:
    """Whether /proc/PID/cmdline is a leaktrace command (`leaktrace ...`,
    `python -m leaktrace ...`, `python .../bin/leaktrace ...`)."""
    argv = [a.decode(errors="replace") for a in cmdline.split(b"\0")[:4]]
    for index, arg in enumerate(argv):
        if arg.rsplit("/", 1)[-1] == "leaktrace":
            return True
        if arg == "-m" and index + 1 < len(argv):
            return argv[index + 1] in ("leaktrace", "leaktrace.cli")
    return False


def parse_status(text: str) -> Tuple[str, int, int]:
    """(name, rss, anon) from /proc/PID/status, the fallback to smaps_rollup."""
    values = parse_meminfo(text)
    name = ""
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.partition(":")[2].strip()
            break
    return name, values.get("VmRSS", 0), values.get("RssAnon", 0)
