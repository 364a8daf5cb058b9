"""The only types passed between leaktrace's stages.

probes -> Snapshot -> aggregate -> Site -> symbolize -> Report -> render

A Snapshot is what the kernel held at one instant, with raw addresses. A Report
is the same data after aggregation and symbolization: plain values only, so it
can be saved, loaded and rendered again after the traced process is gone.
Every type here is immutable and free of bcc, so every stage after the probes
is a pure function that tests can drive without root.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

# Allocation kinds. User mode: heap (the malloc family), anonymous mmap, and
# thread stacks (mmap with MAP_STACK). Kernel mode: one per tracepoint family.
USER_KINDS = ("heap", "mmap", "stack")
KERNEL_KINDS = ("kmalloc", "cache", "page", "percpu", "vmalloc")

# How a frame's address was recovered: a frame-pointer walk, DWARF call-frame
# information, or the kernel's own unwinder.
UNWIND_METHODS = ("fp", "cfi", "kernel")


@dataclass(frozen=True)
class Target:
    """One traced process (user mode), as it was when tracing started."""

    pid: int
    comm: str
    exe: str = ""
    allocator: str = ""  # path of the object whose malloc was hooked
    allocator_name: str = ""  # glibc, jemalloc, tcmalloc, mimalloc, static, ...
    container: Optional["Container"] = None
    # (object as the process sees it, the symbols probed in it), in attach order
    hooked: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    forked_from: int = 0  # --follow-forks: the traced process it was forked from


@dataclass(frozen=True)
class Container:
    runtime: str  # docker, containerd, cri-o, podman, kubernetes
    id: str
    name: str = ""
    image: str = ""


@dataclass(frozen=True)
class StackKey:
    """Identifies one deduplicated stack: the kernel's stack id within a pid.

    pid is 0 for kernel stacks. The same id in two processes names two
    different stacks (addresses differ per address space).
    """

    pid: int
    stack_id: int


@dataclass(frozen=True)
class RawStack:
    """Instruction addresses, innermost first, as the probe collected them."""

    addresses: Tuple[int, ...]
    # Per address, how it was recovered; empty means all "fp" (or "kernel").
    methods: Tuple[str, ...] = ()
    stop: str = ""  # why the walk ended before the outermost frame, if it knows


@dataclass(frozen=True)
class Bucket:
    """Outstanding totals for one allocation context in one time bucket.

    The kernel keeps these per (context, age bucket) so that a report never
    walks the per-allocation map; start_ns..end_ns bound the allocation times
    (monotonic clock, the one bpf_ktime_get_ns uses).
    """

    stack: StackKey
    start_ns: int
    end_ns: int
    bytes: int
    count: int
    kind: str = "heap"
    cache: str = ""  # slab cache (kernel mode)
    pid: int = 0  # process that allocated (kernel mode: any pid)
    comm: str = ""
    cgroup_id: int = 0


@dataclass(frozen=True)
class Allocation:
    """One outstanding allocation, read only for --show-allocs."""

    pid: int
    address: int
    size: int
    timestamp_ns: int
    stack: StackKey
    kind: str = "heap"
    cache: str = ""  # kernel mode: the slab cache (as in Bucket.cache)


# Reachability classes (leaktrace/judge/reach), in the order of their codes in ReachScan.classes.
REACH_CLASSES = ("unreferenced", "indirectly_lost", "reachable")
UNREFERENCED, INDIRECTLY_LOST, REACHABLE = range(3)
NOT_CLASSIFIED = 3  # allocated or freed while the scan ran: its fate at the freeze is unknown


@dataclass(frozen=True)
class ReachScan:
    """--reachability: what a conservative scan of the targets' memory found.

    classes[i] is the class code of Snapshot.allocations[i] (an index into
    REACH_CLASSES, or NOT_CLASSIFIED); heads[i] the first bytes of the blocks
    sampled for their content.
    """

    classes: bytes = b""
    heads: Mapping[int, bytes] = field(default_factory=dict)
    scanned_bytes: int = 0  # memory copied from the targets
    elapsed_s: float = 0.0  # the whole scan, classification included
    frozen_s: float = 0.0  # longest time one target's threads were stopped
    threads: int = 0
    problems: Tuple[str, ...] = ()  # one line per target that could not be scanned


@dataclass(frozen=True)
class Snapshot:
    """Everything the probes held at one instant. Raw: no symbols yet."""

    mode: str  # "user" or "kernel"
    taken_ns: int  # monotonic, same clock as the buckets
    started_ns: int  # when tracing started (monotonic): the first probe that records went in
    wall_time: float  # time.time() at taken_ns, for humans and recordings
    buckets: Tuple[Bucket, ...]
    stacks: Mapping[StackKey, RawStack]
    events: Mapping[str, int] = field(default_factory=dict)
    losses: Mapping[str, int] = field(default_factory=dict)
    targets: Tuple[Target, ...] = ()
    allocations: Tuple[Allocation, ...] = ()
    sample_rate: int = 0  # bytes per sample; 0 = every allocation recorded
    notes: Tuple[str, ...] = ()  # what the probes could not do (missing tracepoints, ...)
    live_ns: int = 0  # when every probe was live (monotonic); 0: at started_ns
    probes: Tuple[str, ...] = ()  # how they work on this kernel: choices made from its version and features
    reach: Optional[ReachScan] = None  # --reachability, at the reports that scanned
    # Kernel mode: how many objects each slab cache has room for now
    # (/proc/slabinfo num_objs); more cannot be held in it.
    slab_slots: Mapping[str, int] = field(default_factory=dict)
    # Kernel mode: per context (a Bucket without age: bytes 0, count = records),
    # the records retired because their address was allocated again - objects
    # freed where no tracepoint fires (kfree_rcu batches, bulk frees).
    silent_frees: Tuple[Bucket, ...] = ()


# Age thresholds (seconds) for the age distribution shown per site.
AGE_THRESHOLDS_S = (1, 10, 60)


@dataclass(frozen=True)
class Site:
    """Outstanding allocations grouped under one key (a stack, a cache, ...)."""

    key: Tuple  # grouping key, e.g. (pid, stack_id)
    bytes: int
    count: int
    oldest_ns: int  # age of the oldest allocation (upper bound, bucket-rounded)
    stacks: Tuple[StackKey, ...]  # the stacks under this site, most bytes first
    kind: str = "heap"
    pid: int = 0
    comm: str = ""
    cache: str = ""
    cgroup_id: int = 0
    # bytes older than each AGE_THRESHOLDS_S threshold (lower bounds)
    bytes_older: Tuple[int, ...] = ()
    # (start_ns, end_ns, bytes) per age bucket, oldest first: lets the growth
    # verdicts see which allocations of an earlier interval were freed since.
    age_buckets: Tuple[Tuple[int, int, int], ...] = ()
    silent_frees: int = 0  # Snapshot.silent_frees of its contexts: its objects go silently


@dataclass(frozen=True)
class Frame:
    """One symbolized frame: `fibonacci+0x1f (app.c:5) [app]`.

    Every name a frame goes by is made here: label() for a stack as printed,
    name() the function alone (graphs merge frames by it), key() function and
    offset (what matches a frame across runs, for diffs). A frame without a
    symbol is `[unknown]` and its module's file name; a placeholder (address
    0 and a note: a stack that was not collected) is its note in brackets.
    """

    addr: int
    symbol: Optional[str] = None
    offset: int = 0
    module: Optional[str] = None  # path of the object (or "kernel")
    file: Optional[str] = None
    line: Optional[int] = None
    unwind: str = "fp"
    note: str = ""  # e.g. "build-id mismatch": never silently wrong

    @property
    def placeholder(self) -> bool:
        return self.symbol is None and self.addr == 0 and bool(self.note)

    @property
    def module_name(self) -> str:
        return self.module.rsplit("/", 1)[-1] if self.module else "unknown module"

    def name(self) -> str:
        if self.symbol:
            return self.symbol
        return f"[{self.note}]" if self.placeholder else f"[unknown] {self.module_name}"

    def key(self) -> str:
        return f"{self.symbol}+0x{self.offset:x}" if self.symbol else self.name()

    def label(self) -> str:
        if self.symbol is None:
            return f"[unknown] 0x{self.addr:x} [{self.module_name}]"
        text = self.key()
        if self.file:
            text += f" ({self.file}:{self.line})" if self.line else f" ({self.file})"
        return f"{text} [{self.module_name}]"


@dataclass(frozen=True)
class ContentSample:
    """The first bytes of one outstanding block (--reachability, kernel contents)."""

    address: int
    size: int
    head: bytes
    reach: str = ""  # its class: one of REACH_CLASSES ("" in kernel mode)


@dataclass(frozen=True)
class KernelPointer:
    """A word of sampled kernel objects that is the address of a kernel symbol."""

    offset: int  # of the word in the object
    address: int  # the word
    symbol: str  # `name` or `name+0xoff`
    objects: int  # sampled objects holding it there
    # Not a function: the functions that the table it points at starts with
    # (an ops table is known by its methods when kallsyms lists no data symbols).
    holds: Tuple[str, ...] = ()


@dataclass(frozen=True)
class RowContents:
    """Kernel mode: what a row's outstanding objects hold (samples of their first bytes)."""

    sampled: int  # objects read
    samples: Tuple[ContentSample, ...]  # the first few of them
    similarity: Optional[float]  # how alike the sampled heads are, 0..1; None under 2
    pointers: Tuple[KernelPointer, ...]  # most objects first


@dataclass(frozen=True)
class RowReach:
    """A row's outstanding allocations by reachability class, and samples of their content."""

    bytes: Tuple[int, ...]  # per REACH_CLASSES
    counts: Tuple[int, ...]
    samples: Tuple[ContentSample, ...] = ()
    similarity: Optional[float] = None  # how alike the sampled heads are, 0..1; None under 2 samples

    def share(self, name: str) -> float:
        total = sum(self.bytes)
        return self.bytes[REACH_CLASSES.index(name)] / total if total else 0.0


@dataclass(frozen=True)
class ReachSummary:
    """The header of a report whose targets were scanned (--reachability)."""

    scanned_bytes: int
    elapsed_s: float
    frozen_s: float
    threads: int
    bytes: Tuple[int, ...]  # per REACH_CLASSES, over every classified allocation that passed the filters
    counts: Tuple[int, ...]
    problems: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportRow:
    rank: int
    bytes: int
    count: int
    oldest_s: float
    frames: Tuple[Frame, ...]
    kind: str = "heap"
    pid: int = 0
    comm: str = ""
    cache: str = ""
    cgroup: str = ""
    bytes_older: Tuple[int, ...] = ()
    estimated: bool = False  # scaled up from samples
    # Rows grouped by cache/process/cgroup: the frames of their next heaviest
    # stacks, after `frames` (the heaviest).
    more_stacks: Tuple[Tuple[Frame, ...], ...] = ()
    # Growth over the session (leaktrace/judge/growth.py): outstanding bytes at each
    # interval (oldest first, this one last), the fitted rate, and the verdict
    # ("leak", "growing", "stable", "unknown"; "" when not judged) with its numbers.
    history: Tuple[int, ...] = ()
    growth_bps: float = 0.0
    verdict: str = ""
    verdict_reason: str = ""
    reach: Optional[RowReach] = None  # --reachability, when this report scanned
    contents: Optional[RowContents] = None  # kernel mode, when this report read contents
    # Kernel mode: of `bytes`, how many frees this trace could not see may
    # explain (missed_frees.Doubts.uncertain_bytes), and the records of this
    # row retired so far because their address was allocated again.
    uncertain_bytes: int = 0
    silent_frees: int = 0


@dataclass(frozen=True)
class Report:
    """A symbolized, self-contained report: what renderers and recordings take."""

    mode: str
    timestamp: float  # wall clock
    elapsed_s: float  # tracing time so far
    targets: Tuple[Target, ...]
    totals: Mapping[str, int]  # outstanding bytes/count over everything matched
    events: Mapping[str, int]
    losses: Mapping[str, int]
    rows: Tuple[ReportRow, ...]
    allocations: Tuple[Allocation, ...] = ()
    warnings: Tuple[str, ...] = ()
    probes: Tuple[str, ...] = ()  # Snapshot.probes: what the probes chose on this kernel
    group_by: str = "stack"
    sample_rate: int = 0
    older_than_ms: int = 0  # the age filter the rows passed
    sites_total: int = 0  # sites that passed the filters, before the top N cut
    taken_ns: int = 0  # monotonic instant of the snapshot: allocation ages
    # Seconds from the start of tracing until every probe was live: calls in
    # that window were traced only by the probes already in.
    attach_s: float = 0.0
    reach: Optional[ReachSummary] = None  # --reachability, when this report scanned
