"""KernelProbe: bpf/kernel_alloc.c on the kmem, percpu and vmalloc tracepoints.

attach() detects the tracepoints (tracepoints.detect), compiles one handler
per event this kernel has, and fills the filter maps; snapshot() reads the
in-kernel totals once (never the per-allocation map unless allocations are
asked for), folds old age blocks out of the map (age_blocks.BlockFolder), and
makes a model.Snapshot whose notes say what could not be traced. Frees
that the kernel skipped because another BPF program was running on the CPU
(BPF recursion protection) are read from each program's recursion_misses.
"""
from __future__ import annotations

import ctypes
import os
import platform
import time
from dataclasses import dataclass
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

from .age_blocks import AgeTotal, BlockFolder
from ..base.config import ProbeConfig
from ..base.errors import EnvironmentProblem, ProbeLoadError
from ..base.model import KERNEL_KINDS, Allocation, Bucket, RawStack, Snapshot, StackKey, Target
from ..symbols import kallsyms
from ..triage import procfs
from . import batch, btf, features, release, slabs, source, tracepoints
from .progstats import recursion_misses
from .stacks import StackCache
from .totals import TotalsMap

SOURCE = "kernel_alloc.c"
# Order of `enum kcounter` in bpf/kernel_common.h.
COUNTERS = ("allocs", "frees", "unknown_frees", "failed_allocs", "alloc_map_full",
            "stack_failed", "bucket_map_full", "replaced", "stack_walks", "stack_checks",
            "stack_mismatches", "nested_frees", "bucket_inserts")
INTERNAL = ("bucket_inserts",)  # bookkeeping, not an event a report shows
# Second programs on the slab free events (bpf/kernel_alloc.c): they run what
# the kernel skips when a free interrupts a free on the same CPU.
NESTED_FREES = {("kmem", "kfree"): "nested_kfree", ("kmem", "kmem_cache_free"): "nested_kmem_cache_free"}
LOSSES = ("alloc_map_full", "stack_failed", "bucket_map_full", "stack_mismatches")
NOT_SLAB = {"page": "[page]", "percpu": "[percpu]", "vmalloc": "[vmalloc]"}
# Free events: a miss there leaves an allocation looking outstanding.
FREE_EVENTS = {spec.free for spec in tracepoints.KIND_EVENTS.values()}
# What bcc says when the verifier, not the compiler, rejects a program.
REFUSED_PROGRAM = "Failed to load BPF program"


@dataclass(frozen=True)
class KernelFilters:
    kinds: Tuple[str, ...] = KERNEL_KINDS
    pids: Tuple[int, ...] = ()
    comms: Tuple[str, ...] = ()
    caches: Tuple[str, ...] = ()  # slab cache names, kmalloc-N included


def cache_label(kind: str, name: bytes, cache_class: int, kmalloc_type: int) -> str:
    """What --by cache groups on, for one bucket key."""
    if kind == "kmalloc":
        return slabs.kmalloc_cache_name(cache_class, kmalloc_type)
    if kind == "cache":
        text = name.split(b"\0", 1)[0].decode(errors="replace")
        return text or f"[object size {cache_class}]"
    return NOT_SLAB.get(kind, f"[{kind}]")


def bucket_cache(key) -> str:
    """cache_label() of a kbucket_key."""
    return cache_label(KERNEL_KINDS[key.kind], bytes(key.cache), key.cache_class, key.kmalloc_type)


def loss_notes(losses: Dict[str, int], config: ProbeConfig) -> Tuple[str, ...]:
    """What each non-zero loss means for the figures, in words."""
    notes = []
    if losses.get("alloc_map_full"):
        notes.append(f"{losses['alloc_map_full']} allocations were not tracked: the allocation map "
                     f"is full (--max-allocs {config.max_allocs}); totals are lower bounds")
    if losses.get("bucket_map_full"):
        notes.append(f"{losses['bucket_map_full']} updates of the totals were lost: too many distinct "
                     f"contexts (--max-buckets {config.max_buckets}); raise it, or narrow what is "
                     "traced with --kind or --cache")
    if losses.get("missed_frees"):
        notes.append(f"{losses['missed_frees']} frees were skipped by the kernel while another BPF "
                     "program ran on the same CPU: some objects may look outstanding until their "
                     "address is reused")
    if losses.get("stack_mismatches"):
        notes.append(f"{losses['stack_mismatches']} of {losses.get('stack_checks', 0)} allocations checked "
                     "against a full stack walk had been read as another path: some rows may hold "
                     "allocations of a neighbouring stack (--full-stacks walks every allocation)")
    if losses.get("replaced"):
        notes.append(f"{losses['replaced']} records were retired when their address was allocated "
                     "again, by any process: those frees fired no tracepoint (kfree_rcu batches and "
                     "bulk frees do not) or were skipped; such objects stay listed until then, and "
                     "their rows' bytes are uncertain")
    return tuple(notes)


def row_context(key) -> Hashable:
    """A kbucket_key without its age block: the row it counts for."""
    return (key.cgroup_id, key.tgid, key.stack_id, key.cache_class, key.kind,
            key.kmalloc_type, bytes(key.cache).split(b"\0", 1)[0])


def _number(value) -> int:
    """A u64 map value: a batch read gives an int, a plain one a ctypes number."""
    return value if isinstance(value, int) else value.value


def slab_slots(path: str = "/proc/slabinfo") -> Dict[str, int]:
    """Objects each slab cache has room for now; {} when slabinfo is unreadable."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return {}
    return {name: cache.slots for name, cache in procfs.parse_slabinfo(text).items()}


def load_program(load, defines: Dict[str, int]) -> Tuple[object, Tuple[str, ...]]:
    """load(SOURCE, defines), and the notes it leaves. Older verifiers (5.10,
    6.1) refuse loop shapes the path reader may compile to; rather than fail
    where --full-stacks works, a refused program is loaded again walking every
    stack. A compile error, or a refusal with full stacks, is raised as is."""
    try:
        return load(SOURCE, defines), ()
    except ProbeLoadError as error:
        if defines.get("FULL_STACKS") or REFUSED_PROGRAM not in error.message:
            raise
        first_line = error.message.splitlines()[0]
    bpf = load(SOURCE, {**defines, "FULL_STACKS": 1})
    return bpf, (f"every stack is walked (as with --full-stacks, slower): this kernel refused the "
                 f"path reader ({first_line})",)


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """Number of possible CPUs ("0-3,5" -> 5): percpu sizes on older kernels."""
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return os.cpu_count() or 1
    total = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


class RunningKernel:
    """Struct layouts (BTF) and variable addresses (kallsyms) of this kernel,
    for cache_names.plan()."""

    def layout(self, struct_name: str, members: Sequence[str]):
        return btf.kernel_member_offsets(struct_name, members)

    def symbol(self, name: str):
        return kallsyms.variable_address(name)

    def machine(self) -> str:
        return platform.machine()


class KernelProbe:
    def __init__(self, config: ProbeConfig, filters: KernelFilters = KernelFilters(),
                 full_stacks: bool = False):
        self.config = config
        self.filters = filters
        self.full_stacks = full_stacks  # walk every allocation's stack, not one per site
        self.plan: tracepoints.TracingPlan = None
        self.bpf = None
        self.started_ns = 0
        self._nested_fds: List[int] = []  # nested free programs' raw tracepoint links
        self.totals: TotalsMap = None  # the `buckets` map, once loaded
        self.stacks = StackCache(self._read_stack)
        # context -> comm of the task that allocated (level-0 entries only:
        # a coarser entry is made by whichever task freed into it)
        self.comms: Dict[Hashable, str] = {}
        self.load_notes: Tuple[str, ...] = ()  # how loading differed from what was asked

    def detect(self, tracefs: str = "") -> tracepoints.TracingPlan:
        """Which kinds this kernel lets us trace; raises when none."""
        self.plan = tracepoints.detect(self.filters.kinds, tracefs or features.ensure_tracefs(),
                                       RunningKernel())
        if not self.plan.kinds:
            wanted = ", ".join(self.filters.kinds)
            raise EnvironmentProblem(
                f"none of the requested kinds ({wanted}) can be traced on this kernel: "
                + "; ".join(self.plan.notes),
                hint="check `ls /sys/kernel/tracing/events/kmem`; choose other kinds with --kind")
        return self.plan

    def defines(self) -> Dict[str, int]:
        if self.plan is None:
            self.detect()
        defines = {k: v for k, v in self.config.defines().items()
                   if k in ("MIN_SIZE", "MAX_SIZE", "MAX_ALLOCS", "MAX_STACKS", "MAX_BUCKETS",
                            "AGE_BUCKET_SHIFT")}
        defines.update(self.plan.defines)
        defines.update(FILTER_PIDS=int(bool(self.filters.pids)),
                       FILTER_COMMS=int(bool(self.filters.comms)),
                       FILTER_CACHES=int(bool(self.filters.caches)),
                       FULL_STACKS=int(self.full_stacks), MAX_PATHS=self.config.max_stacks,
                       SELF_TGID=os.getpid(),
                       PAGE_SIZE_BYTES=os.sysconf("SC_PAGE_SIZE"), POSSIBLE_CPUS=possible_cpus())
        return defines

    def dump(self) -> str:
        return source.dump(SOURCE, self.defines())

    def attach(self) -> None:
        """Compile and load; bcc attaches every TRACEPOINT_PROBE as it loads.
        With a filter on, nothing is recorded until its map is filled."""
        self.bpf, self.load_notes = load_program(source.load, self.defines())
        self.full_stacks = self.full_stacks or bool(self.load_notes)
        self._attach_nested_frees()
        self.totals = TotalsMap(self.bpf["buckets"], self._context, BlockFolder(self.config.age_bucket_shift),
                                lambda: self.counter("bucket_inserts"))
        self._fill_filters()
        self.started_ns = time.monotonic_ns()

    def _fill_filters(self) -> None:
        one = ctypes.c_uint8(1)
        if self.filters.pids:
            table = self.bpf["wanted_pids"]
            for pid in self.filters.pids:
                table[table.Key(pid)] = one
        if self.filters.comms:
            table = self.bpf["wanted_comms"]
            for comm in self.filters.comms:
                key = table.Key()
                key.name = comm.encode()[:15]
                table[key] = one
        if self.filters.caches:
            names, classes = self.bpf["wanted_caches"], self.bpf["wanted_kmalloc"]
            for cache in self.filters.caches:
                kmalloc = slabs.kmalloc_class(cache)
                if kmalloc:
                    classes[classes.Key(kmalloc[0] | kmalloc[1] << slabs.TYPE_SHIFT)] = one
                else:
                    key = names.Key()
                    key.name = cache.encode()[:31]
                    names[key] = one

    # ---- reading -----------------------------------------------------------
    def counters(self) -> Dict[str, int]:
        table = self.bpf["counters"]
        return {name: int(sum(table[ctypes.c_int(i)])) for i, name in enumerate(COUNTERS)}

    def counter(self, name: str) -> int:
        return int(sum(self.bpf["counters"][ctypes.c_int(COUNTERS.index(name))]))

    def missed(self, nested_frees: int = 0) -> Dict[str, int]:
        """Events the kernel did not deliver (BPF recursion protection), less
        the frees the nested programs did instead."""
        allocs = frees = 0
        for (group, event) in self.plan.events:
            function = (self.bpf.funcs.get(f"tracepoint__{group}__{event}".encode())
                        or self.bpf.funcs.get(f"raw_tracepoint__{event}".encode()))
            misses = recursion_misses(function.fd) if function else None
            if misses is None:
                continue
            if (group, event) in FREE_EVENTS:
                frees += misses
            else:
                allocs += misses
        return {"missed_allocs": allocs, "missed_frees": max(0, frees - nested_frees)}

    def _context(self, key, value) -> Hashable:
        """A totals entry's key without its age block; remembers who allocated."""
        context = row_context(key)
        if key.level == 0 and context not in self.comms:
            self.comms[context] = bytes(value.comm).split(b"\0", 1)[0].decode(errors="replace")
        return context

    def snapshot(self, targets: Sequence[Target] = (), with_allocations: bool = False) -> Snapshot:
        taken = time.monotonic_ns()
        folded = self.totals.read(taken)
        buckets = [self._bucket(total) for total in folded.totals if total.count > 0]
        self._forget_comms(folded.totals)
        counters = self.counters()
        losses = {k: counters[k] for k in LOSSES}
        losses.update(self.missed(counters["nested_frees"]))
        return Snapshot(
            mode="kernel", taken_ns=taken, started_ns=self.started_ns, wall_time=time.time(),
            buckets=tuple(buckets), stacks=self.stacks.read(b.stack for b in buckets),
            events={k: v for k, v in counters.items() if k not in LOSSES and k not in INTERNAL},
            losses=losses, targets=tuple(targets),
            allocations=self._read_allocations() if with_allocations else (),
            notes=self.plan.notes + self.load_notes + loss_notes({**losses, **counters}, self.config),
            probes=self.plan.probes, slab_slots=slab_slots(), silent_frees=self._silent_frees(),
        )

    def _silent_frees(self) -> Tuple[Bucket, ...]:
        """The `silent_frees` map as buckets without age: count = records retired."""
        return tuple(self._bucket(AgeTotal(context, 0, 0, 0, count)) for context, count in
                     batch.read_all(self.bpf["silent_frees"], lambda k, v: (row_context(k), _number(v))))

    def _bucket(self, total: AgeTotal) -> Bucket:
        cgroup_id, tgid, stack_id, cache_class, kind_index, kmalloc_type, cache = total.context
        kind = KERNEL_KINDS[kind_index]
        start, end = total.span_ns(self.config.age_bucket_shift, self.started_ns)
        return Bucket(
            stack=StackKey(0, stack_id), start_ns=start, end_ns=end, bytes=total.bytes, count=total.count,
            kind=kind, cache=cache_label(kind, cache, cache_class, kmalloc_type),
            pid=tgid, comm=self.comms.get(total.context, ""), cgroup_id=cgroup_id,
        )

    def _forget_comms(self, totals: Sequence[AgeTotal]) -> None:
        """Keep the names of contexts that still hold something."""
        if len(self.comms) > 2 * len(totals) + 1024:
            held = {total.context for total in totals}
            self.comms = {context: comm for context, comm in self.comms.items() if context in held}

    def _read_stack(self, key: StackKey) -> Optional[RawStack]:
        table = self.bpf["stack_traces"]
        try:
            leaf = table[table.Key(key.stack_id)]
        except KeyError:
            return None
        addresses = tuple(ip for ip in leaf.ip if ip)
        return RawStack(addresses, ("kernel",) * len(addresses))

    def _read_allocations(self) -> Tuple[Allocation, ...]:
        return tuple(
            Allocation(pid=info.bucket.tgid, address=key.addr, size=info.size,
                       timestamp_ns=info.timestamp_ns, stack=StackKey(0, info.bucket.stack_id),
                       kind=KERNEL_KINDS[info.bucket.kind], cache=bucket_cache(info.bucket))
            for key, info in self.bpf["allocs"].items())

    def poll(self, timeout_ms: int) -> None:
        time.sleep(timeout_ms / 1000)
        self.totals.compact(time.monotonic_ns())

    def detach(self) -> None:
        """Leave the tracepoints (maps stay readable), through probes/release.py's helper."""
        if self.bpf is not None:
            release.release([*self.bpf.tracepoint_fds.values(), *self.bpf.raw_tracepoint_fds.values(),
                             *self._nested_fds])
            self.bpf.tracepoint_fds.clear()
            self.bpf.raw_tracepoint_fds.clear()
            self._nested_fds = []

    def _attach_nested_frees(self) -> None:
        """bcc keeps one program per raw tracepoint: the second is attached here."""
        bcc = features.import_bcc()
        for (group, event), function in NESTED_FREES.items():
            if (group, event) not in self.plan.events:
                continue
            program = self.bpf.load_func(function.encode(), bcc.BPF.RAW_TRACEPOINT)
            fd = bcc.libbcc.lib.bpf_attach_raw_tracepoint(program.fd, event.encode())
            if fd < 0:
                raise ProbeLoadError(f"could not attach {function} to the raw tracepoint {event}")
            self._nested_fds.append(fd)

    def close(self) -> None:
        release.close(self)
