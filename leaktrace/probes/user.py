"""UserProbe: bpf/user_alloc.c attached to the allocator of one or more processes.

attach() compiles and attaches; snapshot() reads the in-kernel totals (never
the per-allocation map unless allocations are asked for) into a model.Snapshot.
This module and its siblings are the only code that touches bcc.
"""
from __future__ import annotations

import ctypes
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..allocator import MMAP_FUNCTIONS, HookPlan
from ..config import ProbeConfig
from ..errors import LeaktraceError, ProbeLoadError
from ..placement import describe_kernel, kernel_version
from ..placement_cache import placement_for
from ..symbols import ElfError, open_elf
from ..model import Allocation, Bucket, RawStack, Snapshot, StackKey, Target, USER_KINDS
from ..unwind import Unwinder, is_unwound
from . import features, hooks, release, source
from .hooks import UprobeHooks, attach_error

SOURCE = "user_alloc.c"

# Order of `enum counter` in bpf/common.h.
COUNTERS = (
    "allocs", "frees", "unknown_frees", "failed_allocs", "alloc_map_full",
    "stack_failed", "bucket_map_full", "pending_map_full", "sampled_out",
    "nested_mmaps", "replaced", "nested_calls",
)
# Counters that mean a figure undercounts. unknown_frees is not one: a free of a
# block never seen allocated changes no total (see loss_notes).
LOSSES = ("alloc_map_full", "stack_failed", "bucket_map_full", "pending_map_full")
WEIGHT_SHIFT = 10
FN_NAMES = {0: "free", 1: "malloc", 2: "calloc", 3: "realloc", 4: "reallocarray",
            5: "posix_memalign", 6: "aligned_alloc", 7: "memalign", 8: "valloc",
            9: "pvalloc", 10: "mmap", 11: "mremap"}

# function -> (entry handler, return handler); None where no probe is needed.
HANDLERS: Dict[str, Tuple[Optional[str], Optional[str]]] = {
    "malloc": ("malloc_enter", "malloc_exit"),
    "calloc": ("calloc_enter", "calloc_exit"),
    "realloc": ("realloc_enter", "realloc_exit"),
    "reallocarray": ("reallocarray_enter", "reallocarray_exit"),
    "posix_memalign": ("posix_memalign_enter", "posix_memalign_exit"),
    "aligned_alloc": ("aligned_alloc_enter", "aligned_alloc_exit"),
    "memalign": ("memalign_enter", "memalign_exit"),
    "valloc": ("valloc_enter", "valloc_exit"),
    "pvalloc": ("pvalloc_enter", "pvalloc_exit"),
    "free": ("free_enter", None),
    "mmap": ("mmap_enter", "mmap_exit"),
    "munmap": ("munmap_enter", None),
    "mremap": ("mremap_enter", "mremap_exit"),
}


# Registers each entry handler reads (System V argument order).
ARG_REGS: Dict[str, Tuple[str, ...]] = {
    "malloc": ("rdi",), "calloc": ("rdi", "rsi"), "realloc": ("rdi", "rsi"),
    "reallocarray": ("rdi", "rsi", "rdx"), "posix_memalign": ("rdi", "rsi", "rdx"),
    "aligned_alloc": ("rdi", "rsi"), "memalign": ("rdi", "rsi"), "valloc": ("rdi",),
    "pvalloc": ("rdi",), "free": ("rdi",), "mmap": ("rdi", "rsi", "rdx", "rcx"),
    "munmap": ("rdi",), "mremap": ("rdi", "rsi", "rdx"),
}


# Per-thread call state: task storage (bpf_task_storage_get and
# bpf_get_current_task_btf from tracing programs) arrived in Linux 5.11; older
# kernels get a tid-keyed hash (PENDING_HASH=1), which costs a hash insert and
# delete per call and can fill up (pending_map_full).
TASK_STORAGE_SINCE = (5, 11)
CALL_STATE_TASK_STORAGE = "per-thread call state in BPF task storage"
CALL_STATE_HASH = "per-thread call state in a thread-id hash"


def call_state_without_task_storage(version: Tuple[int, int], load_error: str = "") -> str:
    """The report header's line when call state goes to the thread-id hash."""
    if version < TASK_STORAGE_SINCE:
        return (f"{CALL_STATE_HASH}: Linux {version[0]}.{version[1]} has no task storage for tracing "
                f"programs ({TASK_STORAGE_SINCE[0]}.{TASK_STORAGE_SINCE[1]}+)")
    return f"{CALL_STATE_HASH}: task storage did not load here ({load_error})"


def loss_notes(losses: Dict[str, int], config: ProbeConfig) -> Tuple[str, ...]:
    """What each non-zero loss means for the figures, and which option helps."""
    notes = []
    if losses.get("alloc_map_full"):
        notes.append(f"{losses['alloc_map_full']} allocations were not tracked: the allocation map is "
                     f"full (--max-allocs {config.max_allocs}); totals are lower bounds; raise "
                     "--max-allocs or use --sample-rate")
    if losses.get("stack_failed"):
        notes.append(f"{losses['stack_failed']} allocations have no stack (stack map full at "
                     f"--max-stacks {config.max_stacks}, or the walk failed); they are grouped as [unknown]")
    if losses.get("bucket_map_full"):
        notes.append(f"{losses['bucket_map_full']} updates of the per-stack totals were lost: the "
                     f"totals map is full (--max-buckets {config.max_buckets}): too many distinct "
                     "stacks and ages; totals are lower bounds; raise --max-buckets")
    if losses.get("unknown_frees") and config.sample_rate <= 1:
        notes.append(f"{losses['unknown_frees']} frees of blocks never seen allocated, which change no "
                     "figure: blocks allocated before leaktrace attached; glibc emptying an exiting "
                     "thread's cache (tcache) with free(), i.e. blocks the program had freed already and "
                     "the cache itself, allocated inside malloc; and munmaps of what a partial munmap "
                     "already counted as freed (glibc trims each new arena's mapping so)")
    if losses.get("pending_map_full"):
        notes.append(f"{losses['pending_map_full']} calls were lost between entry and return "
                     "(too many threads inside the allocator at once)")
    return tuple(notes)


def function_address(path: str, function: str) -> Optional[int]:
    """Where `function` starts in the object at path; None when unknown."""
    try:
        found = open_elf(path).find_function(function)
    except (ElfError, OSError):
        return None
    return found[0] if found else None


def distinct_entry_points(path: str, functions: Sequence[str],
                          address_of: Callable[[str, str], Optional[int]] = function_address) -> List[str]:
    """functions without the aliases of one already listed (same address in path).

    Two probes on one address both fire on every call: Debian's glibc defines
    memalign and aligned_alloc at one address, so each call would be recorded
    twice (allocs +2, replaced +1). The first name in family order is kept;
    functions whose address is unknown are all kept.
    """
    seen = set()
    kept = []
    for function in functions:
        address = address_of(path, function)
        if address is not None:
            if address in seen:
                continue
            seen.add(address)
        kept.append(function)
    return kept


def emulated_offset(path: str, function: str) -> int:
    """Where the entry probe costs a trap, not a single-step (see placement.py)."""
    try:
        return placement_for(path, function, ARG_REGS[function]).offset
    except LeaktraceError:
        return 0


def monotonic_ns() -> int:
    """The clock bpf_ktime_get_ns() reads."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class UserProbe:
    def __init__(self, config: ProbeConfig, placements: Optional[Callable[[str, str], int]] = None,
                 addresses: Optional[Callable[[str, str], Optional[int]]] = None):
        self.config = config
        # (object path, function) -> its address, to hook each address once.
        self._address_of = addresses or function_address
        self.bpf = None
        self.started_ns = 0
        self.attached: List[Tuple[int, str, str, int]] = []  # pid, function, object, entry offset
        # (object path, function) -> entry probe offset; 0 keeps the entry.
        self._placement = placements or emulated_offset
        self.unwinder: Optional[Unwinder] = None  # CFI tables (bpf/unwind.h); None with --unwind fp
        self._trace_open = False  # --trace's perf buffer
        self.hooks: Optional[UprobeHooks] = None  # set by load()
        self.probes: List[str] = []  # what load() chose for this kernel, for the report header

    def dump(self) -> str:
        return source.dump(SOURCE, self.config.defines())

    def load(self, links: Optional[bool] = None) -> None:
        """Compile and load; links: whether uprobes will be BPF links (probes/hooks.py)."""
        if self.bpf is not None:
            return
        version = kernel_version()
        if version >= TASK_STORAGE_SINCE:
            try:
                self.bpf = source.load(SOURCE, self.config.defines())
                self.probes = [CALL_STATE_TASK_STORAGE]
            except ProbeLoadError as exc:  # a kernel built without it, or a verifier that refuses it
                self.probes = [call_state_without_task_storage(version, exc.message)]
        else:
            self.probes = [call_state_without_task_storage(version)]
        if self.bpf is None:
            self.bpf = source.load(SOURCE, dict(self.config.defines(), PENDING_HASH=1))
        self.hooks = UprobeHooks(self.bpf, hooks.supported() if links is None else links)
        self.probes.append(describe_kernel(version))
        if self.config.unwind != "fp":
            self._install_walker()

    def _install_walker(self) -> None:
        """The CFI walker is one program every return probe tail-calls, so the
        verifier checks it once instead of once per hooked function."""
        try:
            walker = self.bpf.load_func(b"unwind_walker", self.bpf.KPROBE, attach_type=self.hooks.attach_type)
            self.bpf[b"walkers"][ctypes.c_int(0)] = ctypes.c_int(walker.fd)
        except Exception as exc:  # bcc raises bare Exception on verifier errors
            raise ProbeLoadError(f"could not load the stack walker: {str(exc).strip().splitlines()[-1:]}",
                                 hint="retry with --unwind fp and report the error with --dump-bpf") from None

    def attach(self, plan: HookPlan, pid: int) -> None:
        """Hook the plan's functions for pid (pid may be a child not yet exec'd)."""
        if self.bpf is None:
            bcc_bpf = features.import_bcc().BPF
            self.load(hooks.links_usable(hooks.plan_addresses(bcc_bpf, plan.objects(), pid, self._placement)))
        self._load_unwind_tables(pid)
        for path, functions in plan.objects().items():
            # One probe pair per address: aliases would fire twice per call.
            for function in distinct_entry_points(path, functions, self._address_of):
                if function in MMAP_FUNCTIONS and not self.config.track_mmap:
                    continue
                self._attach_one(path, function, pid)
        if not self.started_ns:
            self.started_ns = monotonic_ns()

    def _load_unwind_tables(self, pid: int) -> None:
        """Before the probes, so the first allocations already unwind with CFI."""
        if self.config.unwind == "fp":
            return
        if self.unwinder is None:
            self.unwinder = Unwinder(self.bpf, self.config.unwind)
        self.unwinder.add(pid)

    def _attach_one(self, path: str, function: str, pid: int) -> None:
        enter, exit_ = HANDLERS[function]
        offset = self._placement(path, function)
        try:
            if enter:
                self.hooks.attach(path.encode(), function.encode(), enter.encode(), pid, offset)
            if exit_:
                self.hooks.attach(path.encode(), function.encode(), exit_.encode(), pid, retprobe=True)
        except Exception as exc:  # bcc raises bare Exception
            raise attach_error(exc, function, path, pid) from None
        self.attached.append((pid, function, path, offset))

    # ---- reading -----------------------------------------------------------
    def counters(self) -> Dict[str, int]:
        table = self.bpf["counters"]
        return {name: int(sum(table[ctypes.c_int(i)])) for i, name in enumerate(COUNTERS)}

    def _read_buckets(self) -> List[Tuple[object, int, int]]:
        """(key, bytes, count << WEIGHT_SHIFT), summed over the per-CPU slots."""
        rows = []
        for key, per_cpu in self.bpf["buckets"].items():
            rows.append((key, ctypes.c_int64(sum(v.bytes for v in per_cpu)).value,
                         ctypes.c_int64(sum(v.count for v in per_cpu)).value))
        return rows

    def snapshot(self, targets: Sequence[Target], with_allocations: bool = False) -> Snapshot:
        taken = monotonic_ns()
        shift = self.config.age_bucket_shift
        buckets = []
        for key, total_bytes, weight in self._read_buckets():
            if weight == 0:
                continue
            stack = StackKey(key.tgid, key.stack_id)
            buckets.append(Bucket(
                stack=stack, start_ns=key.epoch << shift, end_ns=(key.epoch + 1) << shift,
                bytes=total_bytes, count=weight >> WEIGHT_SHIFT,
                kind=USER_KINDS[key.kind], pid=key.tgid,
            ))
        counters = self.counters()
        return Snapshot(
            mode="user", taken_ns=taken, started_ns=self.started_ns, wall_time=time.time(),
            buckets=tuple(buckets), stacks=self._read_stacks(b.stack for b in buckets),
            events={k: v for k, v in counters.items() if k not in LOSSES},
            losses={k: counters[k] for k in LOSSES}, targets=tuple(targets),
            allocations=self.read_allocations() if with_allocations else (),
            sample_rate=self.config.sample_rate if self.config.sample_rate > 1 else 0,
            notes=(tuple(self.unwinder.notes()) if self.unwinder else ())
            + loss_notes(counters, self.config), probes=tuple(self.probes),
        )

    def _read_stacks(self, keys: Iterable[StackKey]) -> Dict[StackKey, RawStack]:
        table = self.bpf["stack_traces"]
        stacks = {}
        for key in set(keys):
            if key.stack_id < 0 or key in stacks:
                continue
            if is_unwound(key.stack_id):
                raw = self.unwinder.read_stack(key.stack_id) if self.unwinder else None
                if raw is not None:
                    stacks[key] = raw
                continue
            try:
                stacks[key] = RawStack(tuple(table.walk(key.stack_id)))
            except KeyError:
                continue
        return stacks

    def read_allocations(self) -> Tuple[Allocation, ...]:
        """Every outstanding allocation in the map (--show-allocs, --reachability)."""
        allocations = []
        for key, info in self.bpf["allocs"].items():
            allocations.append(Allocation(
                pid=key.tgid, address=key.addr, size=info.size, timestamp_ns=info.timestamp_ns,
                stack=StackKey(key.tgid, info.stack_id), kind=USER_KINDS[key.kind],
            ))
        return tuple(allocations)

    def prune(self) -> None:
        """Drop emptied buckets of past epochs: only frees reach them now."""
        table = self.bpf["buckets"]
        current = monotonic_ns() >> self.config.age_bucket_shift
        for key, _, weight in self._read_buckets():
            if weight == 0 and key.epoch + 1 < current:
                try:
                    del table[key]
                except KeyError:
                    pass

    # ---- --trace ------------------------------------------------------------
    def open_trace(self, print_line: Callable[[str], None]) -> None:
        if self._trace_open:
            return
        self._trace_open = True

        def on_event(cpu, data, size):
            event = self.bpf["events"].event(data)
            what = FN_NAMES.get(event.fn, str(event.fn))
            if event.fn == 0:
                what = "munmap" if event.size == 0 else "free"
                print_line(f"{event.timestamp_ns} pid={event.tgid} tid={event.tid} {what} 0x{event.addr:x}")
            else:
                print_line(f"{event.timestamp_ns} pid={event.tgid} tid={event.tid} {what} "
                           f"0x{event.addr:x} size={event.size} stack={event.stack_id}")
        self.bpf["events"].open_perf_buffer(on_event, page_cnt=64)

    def poll(self, timeout_ms: int) -> None:
        if self.unwinder:
            self.unwinder.refresh()  # exec (leaktrace run) and dlopen bring new code
        if self.config.trace:
            self.bpf.perf_buffer_poll(timeout=timeout_ms)
        else:
            time.sleep(timeout_ms / 1000)

    def detach(self) -> None:
        """Remove every uprobe from the targets (maps stay readable): handed to
        a helper process, so no signal to leaktrace can leave one behind."""
        if self.bpf is not None:
            release.release(self.hooks.take_fds())

    def close(self) -> None:
        """Detach, free the BPF objects and wait until the targets are clean."""
        if self.bpf is not None:
            self.detach()
            self.bpf.cleanup()
            self.bpf = None
        release.wait()
