"""The reachability scan of one report: Snapshot -> Snapshot with a ReachScan.

For each traced process: stop its threads (target.Frozen), read its maps,
plan the regions (regions.plan), copy the resident pages (bounded by
--reachability-max-mb), resume it; then, with the process running again,
classify the copy (classify.classify) and keep the first bytes of a few
blocks per stack (content.choose).

Which blocks existed at the freeze: the snapshot read the allocation map
just before it, and the scan reads it again just after. A block in both
(same address and allocation time) lived through the freeze and is classified.
A block in only one of them was freed or made around the freeze: its fate is
unknown, so its memory counts as a root (never making another block look
lost) and it is not classified. Memory no tracked block covers inside the
heap counts as a root too when blocks may be missing from the map: under
attach (blocks allocated before tracing began), with --min-size/--max-size,
and after allocations were lost (a full map). Under run, every block since
exec is known, so it is the allocator's free space and bookkeeping, and is
ignored.

A process that cannot be scanned (exited, not permitted, already stopped by
a debugger, too large) gives one line in ReachScan.problems; the report goes on.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Sequence, Tuple

from ...base.errors import LeaktraceError
from ...base.model import NOT_CLASSIFIED, Allocation, ReachScan, Snapshot
from ...base.units import format_bytes
from ...symbols.maps import read_maps
from . import classify, content, regions, target
from .memory import ROOT, MemoryImage, Segment

# Losses after which the allocation map misses live blocks.
MISSING_BLOCKS = ("alloc_map_full", "pending_map_full")
MIB = 1 << 20


@dataclass(frozen=True)
class Copy:
    """What was read from one process while it was stopped."""

    segments: Tuple[Segment, ...]
    frozen_s: float
    threads: int


@dataclass
class Scanner:
    read_allocations: Callable[[], Sequence[Allocation]]
    max_bytes: int
    # The map may lack live blocks: attach (made before tracing began),
    # --min-size/--max-size (filtered out in the probe).
    missing_blocks: bool

    def __call__(self, snapshot: Snapshot) -> Snapshot:
        started = time.monotonic()
        copies: Dict[int, Copy] = {}
        problems: List[str] = []
        budget = self.max_bytes
        for t in snapshot.targets:
            blocks = [a for a in snapshot.allocations if a.pid == t.pid]
            try:
                copies[t.pid] = copy_process(t.pid, blocks, budget)
            except LeaktraceError as problem:
                problems.append(problem.message)
                continue
            budget -= sum(len(s.data) for s in copies[t.pid].segments)
        after = self.read_allocations()
        untracked = self.missing_blocks or any(snapshot.losses.get(k) for k in MISSING_BLOCKS)
        try:
            classes, heads = judge_blocks(snapshot.allocations, after, copies, untracked)
        except MemoryError:  # the report matters more than its scan
            classes, heads = bytes([NOT_CLASSIFIED]) * len(snapshot.allocations), {}
            problems.append("not enough memory to classify what was read; lower --reachability-max-mb")
        reach = ReachScan(
            classes=classes, heads=heads,
            scanned_bytes=sum(len(s.data) for c in copies.values() for s in c.segments),
            elapsed_s=time.monotonic() - started,
            frozen_s=max((c.frozen_s for c in copies.values()), default=0.0),
            threads=sum(c.threads for c in copies.values()), problems=tuple(problems))
        return replace(snapshot, reach=reach)


def copy_process(pid: int, blocks: Sequence[Allocation], budget: int) -> Copy:
    """Stop pid, copy the memory the scan reads, resume it."""
    with target.Frozen(pid) as frozen:
        plan = regions.plan(read_maps(pid), frozen.stack_pointers,
                            [(b.address, b.size) for b in blocks])
        runs = target.resident_runs(pid, plan)
        total = sum(end - start for _, start, end in runs)
        if total > budget:
            raise target.ScanProblem(
                f"PID {pid} not scanned: {format_bytes(total)} to read, over the "
                f"{budget // MIB} MiB left of --reachability-max-mb; raise it")
        segments = target.read_segments(pid, runs)
    words = [w for regs in frozen.registers.values() for w in regs]
    segments.append(Segment(0, struct.pack(f"<{len(words)}Q", *words), ROOT))
    return Copy(tuple(segments), frozen.frozen_s, len(frozen.registers))


def judge_blocks(allocations: Sequence[Allocation], after: Sequence[Allocation],
                 copies: Dict[int, Copy], untracked_is_root: bool) -> Tuple[bytes, Dict[int, bytes]]:
    """Pure: class code per allocation (NOT_CLASSIFIED where unknown) and sampled heads."""
    classes = bytearray([NOT_CLASSIFIED]) * len(allocations)
    heads: Dict[int, bytes] = {}
    still = {(a.pid, a.address, a.timestamp_ns) for a in after}
    for pid, copy in copies.items():
        mine = [i for i, a in enumerate(allocations) if a.pid == pid]
        known = {(allocations[i].address, allocations[i].timestamp_ns) for i in mine}
        lived = [(allocations[i].pid, allocations[i].address, allocations[i].timestamp_ns) in still
                 for i in mine]
        blocks = [classify.Block(allocations[i].address, allocations[i].size,
                                 _content(allocations[i]) if ok else classify.ROOT_CONTENT)
                  for i, ok in zip(mine, lived)]
        blocks += [classify.Block(a.address, a.size, classify.ROOT_CONTENT) for a in after
                   if a.pid == pid and (a.address, a.timestamp_ns) not in known]
        codes = classify.classify(blocks, copy.segments, untracked_is_root)
        for i, ok, code in zip(mine, lived, codes):
            if ok:
                classes[i] = code
        heads.update(_heads(allocations, [i for i, ok in zip(mine, lived) if ok], classes,
                            MemoryImage(copy.segments)))
    return bytes(classes), heads


def _content(allocation: Allocation) -> str:
    # A thread stack's live part is a root of its own; the rest is dead frames.
    return classify.SKIP if allocation.kind == "stack" else classify.SCAN


def _heads(allocations: Sequence[Allocation], indexes: List[int], classes: bytearray,
           image: MemoryImage) -> Dict[int, bytes]:
    by_stack: Dict[Tuple, List[Tuple[int, int, int]]] = {}
    for i in indexes:
        a = allocations[i]
        key = (a.stack.pid, a.stack.stack_id, a.kind)  # plain ints hash faster than StackKey
        by_stack.setdefault(key, []).append((i, classes[i], a.timestamp_ns))
    heads = {}
    for candidates in by_stack.values():
        for i in content.choose(candidates):
            a = allocations[i]
            heads[i] = image.read(a.address, min(a.size, content.HEAD_BYTES))
    return heads
