"""UserProbe: bpf/user_alloc.c attached to the allocator of one or more processes.

attach() compiles and attaches: every return probe and the free side first,
then the entry probes, so no call is seen entering without its return being
seen too, and no block allocated while attaching has its free missed.
snapshot() reads the in-kernel totals once (never the per-allocation map
unless allocations are asked for), folds old age blocks out of the map
(age_blocks.BlockFolder) and drops what processes held before they exec'd,
into a model.Snapshot. This module and its siblings are the only code that
touches bcc.
"""
from __future__ import annotations

import ctypes
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .age_blocks import AgeTotal, BlockFolder
from ..base.config import ProbeConfig
from ..base.errors import ProbeLoadError
from ..base.model import Allocation, Bucket, RawStack, Snapshot, StackKey, Target, USER_KINDS
from ..base import timing
from ..process.traced_process import TracedProcess
from . import alloc_functions, exceptions, features, hooks, release, source
from .allocator import Hook, HookPlan
from .attach_plan import attach_order, distinct_entry_points, emulated_offset, function_address
from .late_allocators import LateAllocators
from .user_counters import COUNTERS, INTERNAL, LOSSES, loss_notes
from .alloc_functions import FN_NAMES, FREE_SIDE, HANDLERS, MMAP_FUNCTIONS, UNWIND_SIDE
from .execs import ExecWatch
from .followed import ForkedChildren, task_tgid_offset
from .hooks import UprobeHooks, attach_error
from .placement import describe_kernel, kernel_version
from .stacks import StackCache
from .totals import TotalsMap
from .table_builds import TableBuilds
from .unwinder import Unwinder, is_unwound
from ..unwind.spaces import is_unexeced_fork, map_process_in_steps

SOURCE = "user_alloc.c"

WEIGHT_SHIFT = 10


# Per-thread call state: task storage (bpf_task_storage_get and
# bpf_get_current_task_btf from tracing programs) arrived in Linux 5.11; older
# kernels get a tid-keyed hash (PENDING_HASH=1), which costs a hash insert and
# delete per call and can fill up (pending_map_full).
TASK_STORAGE_SINCE = (5, 11)
CALL_STATE_TASK_STORAGE = "per-thread call state in BPF task storage"
CALL_STATE_HASH = "per-thread call state in a thread-id hash"


# How deep the CFI walk goes (bpf/unwind.h UNWIND_MAX_DEPTH): as deep as perf
# where the verifier takes it. Linux 5.10's refuses the 128-frame walk (E2BIG,
# found by the kernel matrix): older kernels, and any kernel that refuses it,
# walk 32 frames, and the header says so.
DEEP_WALK, SHALLOW_WALK = 128, 32
DEEP_WALK_SINCE = (5, 11)


def first_walk_depth(version: Tuple[int, int]) -> int:
    """How deep the first compile walks on this kernel version."""
    return SHALLOW_WALK if version < DEEP_WALK_SINCE else DEEP_WALK


def call_state_without_task_storage(version: Tuple[int, int], load_error: str = "") -> str:
    """The report header's line when call state goes to the thread-id hash."""
    if version < TASK_STORAGE_SINCE:
        return (f"{CALL_STATE_HASH}: Linux {version[0]}.{version[1]} has no task storage for tracing "
                f"programs ({TASK_STORAGE_SINCE[0]}.{TASK_STORAGE_SINCE[1]}+)")
    return f"{CALL_STATE_HASH}: task storage did not load here ({load_error})"


def _context(key, value) -> Tuple[int, int, int, int]:
    """A totals entry's key without its age block: (pid, stack, kind, exec image)."""
    return key.tgid, key.stack_id, key.kind, key.image


def monotonic_ns() -> int:
    """The clock bpf_ktime_get_ns() reads."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class UserProbe:
    def __init__(self, config: ProbeConfig, placements: Optional[Callable[[Hook], int]] = None,
                 addresses: Optional[Callable[[str, str], Optional[int]]] = None):
        self.config = config
        # (object path, symbol) -> its address, to hook each address once.
        self._address_of = addresses or function_address
        self.bpf = None
        self.started_ns = 0
        self.live_ns = 0  # when the last attach() had every probe in
        self.attached: List[Tuple[int, Hook, int]] = []  # pid, hook, entry offset
        # hook -> entry probe offset; 0 keeps the entry.
        self._placement = placements or emulated_offset
        self.unwinder: Optional[Unwinder] = None  # CFI tables (bpf/unwind.h); None with --unwind fp
        self.table_builds = TableBuilds(map_process_in_steps)  # the unwinder's, started before it exists
        self._trace_open = False  # --trace's perf buffer
        self.hooks: Optional[UprobeHooks] = None  # set by load()
        self.probes: List[str] = []  # what load() chose for this kernel, for the report header
        self.totals: Optional[TotalsMap] = None  # the `buckets` map, once loaded
        self.stacks = StackCache(self._read_stack)
        self.execs = ExecWatch()
        self._compiling: Optional[source.Compiling] = None  # compile_early()
        self.notes: List[str] = []  # what attach() chose not to hook, and why
        self.forks = ForkedChildren()
        self.late_allocators = LateAllocators()  # notes on allocators mapped after attach
        # Frames the CFI walk keeps: known before compile_early() compiles (load() may lower it).
        self.walk_depth = first_walk_depth(kernel_version())
        self._hooked: set = set()  # --follow-forks: (device, inode, function) hooked for every process

    def defines(self) -> Dict[str, int]:
        """The -D settings: the options, and the function numbers of the allocator table."""
        forks = {"TASK_TGID_OFFSET": task_tgid_offset()} if self.config.follow_forks else {}
        return {**self.config.defines(), **alloc_functions.defines(), **forks,
                "UNWIND_MAX_DEPTH": self.walk_depth}

    def dump(self) -> str:
        return source.dump(SOURCE, self.defines())

    def _first_choice(self) -> Dict[str, int]:
        """Per-thread call state in task storage where the kernel has it (or
        the thread-id hash when asked for, or before Linux 5.11)."""
        if self.config.pending_hash or kernel_version() >= TASK_STORAGE_SINCE:
            return self.defines()
        return dict(self.defines(), PENDING_HASH=1)

    def compile_early(self) -> None:
        """Start compiling the programs now, in the background (load() waits)."""
        if self.bpf is None and self._compiling is None:
            self._compiling = source.Compiling(SOURCE, self._first_choice())

    def _compiled(self):
        """The program as compiled with the first choice of defines."""
        self.compile_early()
        compiling, self._compiling = self._compiling, None
        return compiling.result()

    def load(self, links: Optional[bool] = None) -> None:
        """Compile and load; links: whether uprobes will be BPF links (probes/hooks.py)."""
        if self.bpf is not None:
            return
        version = kernel_version()
        if self.config.pending_hash:  # asked for: its defines already say PENDING_HASH=1
            self.bpf = self._compiled()
            self.probes = [f"{CALL_STATE_HASH} (asked for)"]
        elif version >= TASK_STORAGE_SINCE:
            try:
                self.bpf = self._compiled()
                self.probes = [CALL_STATE_TASK_STORAGE]
            except ProbeLoadError as exc:  # a kernel built without it, or a verifier that refuses it
                self.probes = [call_state_without_task_storage(version, exc.message)]
        else:
            self.bpf = self._compiled()
            self.probes = [call_state_without_task_storage(version)]
        if self.bpf is None:
            self.bpf = source.load(SOURCE, dict(self.defines(), PENDING_HASH=1))
        self.hooks = UprobeHooks(self.bpf, hooks.supported() if links is None else links)
        self.probes.append(describe_kernel(version))
        try:
            self._install_recorder()
        except ProbeLoadError:
            if self.walk_depth == SHALLOW_WALK or self.config.unwind == "fp":
                raise
            self._reload_with_shallow_walk()
        if self.walk_depth == SHALLOW_WALK and self.config.unwind != "fp":
            self.probes.append(f"user stacks walked with unwind tables {SHALLOW_WALK} frames deep: this "
                               f"kernel's verifier refuses a {DEEP_WALK}-frame walk")
        self.totals = TotalsMap(self.bpf["buckets"], _context, BlockFolder(self.config.age_bucket_shift),
                                lambda: self.counter("bucket_inserts"))

    def _reload_with_shallow_walk(self) -> None:
        """Compile again with the 32-frame walk (the same call state as before)."""
        pending = int(any(CALL_STATE_HASH in line for line in self.probes))
        links = self.hooks.links
        self.bpf.cleanup()
        self.walk_depth = SHALLOW_WALK
        self.bpf = source.load(SOURCE, dict(self.defines(), PENDING_HASH=pending))
        self.hooks = UprobeHooks(self.bpf, links)
        self._install_recorder()

    def _install_recorder(self) -> None:
        """The recorder (stack walk included) is one program every return probe
        tail-calls, so clang and the verifier see it once, not per hooked function."""
        try:
            recorder = self.bpf.load_func(b"recorder", self.bpf.KPROBE, attach_type=self.hooks.attach_type)
            self.bpf[b"recorders"][ctypes.c_int(0)] = ctypes.c_int(recorder.fd)
        except Exception as exc:  # bcc raises bare Exception on verifier errors
            retry = "retry with --unwind fp and " if self.config.unwind != "fp" else ""
            raise ProbeLoadError(f"could not load the recorder: {str(exc).strip().splitlines()[-1:]}",
                                 hint=f"{retry}report the error with --dump-bpf") from None

    def load_for(self, plan: HookPlan, pid: int) -> None:
        """Load as attach() will need: BPF links unless the kernel refuses one at
        a hooked address (probes/hooks.py's links_usable)."""
        if self.bpf is None:
            bcc_bpf = features.import_bcc().BPF
            with timing.step("placement", "placing the probes"):
                addresses = hooks.plan_addresses(bcc_bpf, plan.objects(), pid, self._placement)
            with timing.step("link check"):
                links = hooks.links_usable(addresses)
            self.load(links)

    def attach(self, process: TracedProcess) -> None:
        """Hook the functions of the process's plan (it may be a child not yet exec'd)."""
        plan, pid = process.plan, process.pid
        if self.config.unwind != "fp" and not is_unexeced_fork(pid):
            self.table_builds.submit(process)  # while the programs compile
        self.load_for(plan, pid)
        with timing.step("unwind tables", "reading unwind tables"):
            self._load_unwind_tables(process)
        self.execs.watch(self.bpf["images"], pid)
        # One probe pair per address: aliases would fire twice per call.
        hooked = [hook for path, hooks in plan.objects().items()
                  for hook in distinct_entry_points(path, hooks, self._address_of)
                  if hook.function not in MMAP_FUNCTIONS or self.config.track_mmap]
        hooked, note = exceptions.choose(hooked, exceptions.throwing(hooked) and self._restorable(),
                                         self.config.probe_throwing_new)
        if note and note not in self.notes:
            self.notes.append(note)
        if self.config.follow_forks:  # one probe per file serves every process
            hooked = [hook for hook in hooked if self._first_hook(hook)]
        with timing.step("uprobes", "attaching uprobes"):
            offsets = self._attach_hooks(hooked, pid)
        self.live_ns = monotonic_ns()
        self.started_ns = self.started_ns or self.live_ns
        for hook in hooked:
            self.attached.append((pid, hook, offsets.get(hook, 0)))

    def _attach_hooks(self, hooked: List[Hook], pid: int) -> Dict[Hook, int]:
        """Attach in attach_order; returns each entry probe's offset."""
        offsets = {}
        for hook, side in attach_order(hooked):
            # Tracing starts with the first probe that records, not the last
            # probe: what is recorded while the rest attach keeps its true age.
            if not self.started_ns and side == "entry" and hook.function not in FREE_SIDE + UNWIND_SIDE:
                self.started_ns = monotonic_ns()
            offset = self._attach_probe(hook, pid, side)
            if side == "entry":
                offsets[hook] = offset
        return offsets

    def _restorable(self) -> bool:
        """Whether the kernel loads the handler that lets an exception leave new (exceptions.py)."""
        try:
            with exceptions.verifier_log_hidden():
                self.bpf.load_func(exceptions.RESTORER.encode(), self.bpf.KPROBE, attach_type=self.hooks.attach_type)
            return True
        except Exception:  # bcc raises bare Exception when the verifier refuses the helper
            return False

    def _first_hook(self, hook: Hook) -> bool:
        """Whether the hook's symbol in its file is not hooked yet (--follow-forks)."""
        try:
            info = os.stat(hook.path)
        except OSError:
            return True  # attach() will say what is wrong
        key = (info.st_dev, info.st_ino, hook.symbol)
        if key in self._hooked:
            return False
        self._hooked.add(key)
        return True

    def _load_unwind_tables(self, process: TracedProcess) -> None:
        """Before the probes: the tables built so far are written, the others
        marked as loading (their stacks walk frame pointers until refresh() writes them)."""
        if self.config.unwind == "fp":
            return
        if self.unwinder is None:
            self.unwinder = Unwinder(self.bpf, self.config.unwind, max_depth=self.walk_depth,
                                     builds=self.table_builds)
        self.unwinder.add(process)

    def libraries_mapped(self, process: TracedProcess) -> None:
        """`run`: the loader has mapped the command's libraries; their tables go in before it runs on."""
        if self.unwinder is not None:
            with timing.step("unwind tables after the loader", "reading unwind tables"):
                self.unwinder.reload(process)

    def _attach_probe(self, hook: Hook, pid: int, side: str) -> int:
        """Attach one probe; returns the entry probe's offset (0 for a return probe)."""
        enter, exit_ = HANDLERS[hook.function]
        offset = self._placement(hook) if side == "entry" else 0
        path, symbol = hook.path.encode(), hook.symbol.encode()
        every = self.config.follow_forks  # the kernel's traced set filters, not the probe
        try:
            if side == "entry":
                self.hooks.attach(path, symbol, enter.encode(), pid, offset, every_process=every)
            else:
                self.hooks.attach(path, symbol, exit_.encode(), pid, retprobe=True, every_process=every)
        except Exception as exc:  # bcc raises bare Exception
            raise attach_error(exc, hook.symbol, hook.path, pid) from None
        return offset

    def hooked(self, pid: int) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
        """(object, symbols) probed in pid, the object as the process names it."""
        by_object: Dict[str, List[str]] = {}
        for attached_pid, hook, _ in self.attached:
            if attached_pid == pid:
                by_object.setdefault(hook.object or hook.path, []).append(hook.symbol)
        return tuple((obj, tuple(symbols)) for obj, symbols in by_object.items())

    # ---- reading -----------------------------------------------------------
    def counters(self) -> Dict[str, int]:
        table = self.bpf["counters"]
        return {name: int(sum(table[ctypes.c_int(i)])) for i, name in enumerate(COUNTERS)}

    def counter(self, name: str) -> int:
        return int(sum(self.bpf["counters"][ctypes.c_int(COUNTERS.index(name))]))

    def snapshot(self, targets: Sequence[Target], with_allocations: bool = False) -> Snapshot:
        taken = monotonic_ns()
        self.read_images()
        folded = self.totals.read(taken, drop=self._replaced_image)
        self._count_dropped(folded.dropped)
        buckets = [self._bucket(total) for total in folded.totals if total.count > 0]
        counters = self.counters()
        return Snapshot(
            mode="user", taken_ns=taken, started_ns=self.started_ns, wall_time=time.time(),
            buckets=tuple(buckets), stacks=self.stacks.read(b.stack for b in buckets),
            events={k: v for k, v in counters.items() if k not in LOSSES and k not in INTERNAL},
            losses={k: counters[k] for k in LOSSES},
            targets=tuple(self.execs.current(t) for t in (*targets, *self._forked_targets(targets))),
            allocations=self.read_allocations() if with_allocations else (),
            sample_rate=self.config.sample_rate if self.config.sample_rate > 1 else 0,
            notes=(tuple(self.unwinder.notes(buckets)) if self.unwinder else ())
            + loss_notes(counters, self.config) + self.execs.notes() + tuple(self.notes)
            + tuple(self.late_allocators.notes()),
            probes=tuple(self.probes)
            + ((self.forks.summary(len(targets)),) if self.config.follow_forks else ()),
            live_ns=self.live_ns,
        )

    def read_images(self) -> List[int]:
        """Read execs and followed forks from `images`; returns the children new since the last read."""
        table = self.bpf["images"]
        new = self.forks.read(table) if self.config.follow_forks else []
        for pid in new:
            self.execs.follow(pid)
        self.execs.read(table, self.started_ns)
        self.forks.prune(table)
        return new

    def _forked_targets(self, named: Sequence[Target]) -> Tuple[Target, ...]:
        return self.forks.targets(named) if self.config.follow_forks else ()

    def _bucket(self, total: AgeTotal) -> Bucket:
        tgid, stack_id, kind, _ = total.context
        start, end = total.span_ns(self.config.age_bucket_shift, self.started_ns)
        return Bucket(stack=StackKey(tgid, stack_id), start_ns=start, end_ns=end, bytes=total.bytes,
                      count=total.count >> WEIGHT_SHIFT, kind=USER_KINDS[kind], pid=tgid)

    def _replaced_image(self, context) -> bool:
        """Totals (pid, stack, kind, image) of an image its process exec'd away from."""
        return self.execs.replaced(context[0], context[3])

    def _count_dropped(self, dropped) -> None:
        self.execs.count_dropped({context: (nbytes, weight >> WEIGHT_SHIFT)
                                  for context, (nbytes, weight) in dropped.items()})

    def _read_stack(self, key: StackKey) -> Optional[RawStack]:
        if is_unwound(key.stack_id):
            return self.unwinder.read_stack(key.stack_id) if self.unwinder else None
        try:
            return RawStack(tuple(self.bpf["stack_traces"].walk(key.stack_id)))
        except KeyError:
            return None

    def read_allocations(self) -> Tuple[Allocation, ...]:
        """Every outstanding allocation in the map (--show-allocs, --reachability)."""
        allocations = []
        for key, info in self.bpf["allocs"].items():
            if self.execs.replaced(key.tgid, info.image & 0xFFFF):
                continue  # a record of a program its process exec'd away from
            allocations.append(Allocation(
                pid=key.tgid, address=key.addr, size=info.size, timestamp_ns=info.timestamp_ns,
                stack=StackKey(key.tgid, info.stack_id), kind=USER_KINDS[key.kind],
            ))
        return tuple(allocations)

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
            self.late_allocators.notice(self.unwinder.mapped_late, [hook.path for _, hook, _ in self.attached])
        self.read_images()
        self._count_dropped(self.totals.compact(monotonic_ns(), drop=self._replaced_image).dropped)
        if self.config.trace:
            self.bpf.perf_buffer_poll(timeout=timeout_ms)
        else:
            time.sleep(timeout_ms / 1000)

    def detach(self) -> None:
        """Remove every uprobe from the targets (maps stay readable): handed to
        a helper process, so no signal to leaktrace can leave one behind."""
        self.table_builds.stop()
        if self.bpf is not None:
            # The tracepoints too (exec; fork and exit with --follow-forks):
            # bcc's cleanup would close them here, and a tracepoint's close
            # waits out grace periods (~0.9 s under load).
            self.hooks.holder.hold(list(self.bpf.tracepoint_fds.values())
                                   + list(self.bpf.raw_tracepoint_fds.values()))
            self.bpf.tracepoint_fds.clear()
            self.bpf.raw_tracepoint_fds.clear()
            self.hooks.release()

    def close(self) -> None:
        """Detach, free the BPF objects and wait until the targets are clean."""
        release.close(self)
