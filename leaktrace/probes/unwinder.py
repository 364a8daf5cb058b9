"""Unwinder: puts traced processes' unwind tables into the BPF maps of
bpf/unwind.h and reads the stacks the walker stored.

Contract: add(process) has a TracedProcess's tables built in the background
(table_builds.TableBuilds runs spaces.map_process_in_steps; until the first
are written the process's stacks are walked with frame pointers, and notes()
counts them; frames in objects whose tables come in a later step are walked
with frame pointers until then); store_built(), called by add() and
refresh(), writes each step: it places each
binary's rows once in `unwind_rows` (shared by every process mapping the
same build-id) and writes the process's mappings; in "auto" mode a process
whose every table-backed object keeps frame pointers gets no tables, so its
stacks stay on bpf_get_stackid. refresh() re-maps processes whose executable
mappings changed (exec under `leaktrace run`, dlopen), looking at those only
when the process's maps changed at all (TracedProcess.version); reload(process)
loads at once (`run`, when the loader has mapped the libraries). read_stack() turns an
unwound stack id into a RawStack with a method per frame; notes() says,
once per cause, why stacks may be incomplete. Needs the loaded bcc.BPF object.
"""
from __future__ import annotations

import ctypes
import time
from typing import Dict, List, Optional, Sequence

from ..base.errors import LeaktraceError
from ..base.model import Bucket, RawStack
from ..process.traced_process import TracedProcess
from ..unwind.spaces import (
    MappedObject, ProcessSpace, executable_mappings, is_unexeced_fork, map_process, map_process_in_steps,
    signature_of,
)
from ..unwind.tables import ROW
from .table_builds import Built, EarlyWalks, TableBuilds, early_notes

MAX_MAPPINGS = 128  # UNWIND_MAX_MAPPINGS
MAX_DEPTH = 128  # UNWIND_MAX_DEPTH
ID_BIT = 0x40000000  # UNWIND_ID_BIT
COUNTERS = ("walks", "truncated", "collisions", "map_full", "unknown_code")  # enum unwind_counter
STOP_UNKNOWN_CODE = 1  # enum unwind_stop
UNKNOWN_CODE_STOP = ("the walk stops here: this code was not in the unwind tables when it ran (mapped "
                     "after they were loaded, by dlopen, or generated); its callers are missing")
REFRESH_S = 0.2
U64 = (1 << 64) - 1


def is_unwound(stack_id: int) -> bool:
    """Whether a stack id names an unwound_stacks entry (not a stack_traces one)."""
    return stack_id >= 0 and bool(stack_id & ID_BIT)


class Unwinder:
    def __init__(self, bpf, mode: str = "auto", max_rows: int = 1 << 20, max_processes: int = 64,
                 max_depth: int = MAX_DEPTH, builds: Optional[TableBuilds] = None):
        self.bpf = bpf
        self.builds = builds or TableBuilds(map_process_in_steps)
        self.early = EarlyWalks()
        self.mode = mode
        self.max_rows, self.max_processes, self.max_depth = max_rows, max_processes, max_depth
        self._placed: Dict[str, tuple] = {}  # table key -> (first row, count)
        self._next_row = 0
        self._slots: Dict[int, int] = {}  # pid -> slot
        self._processes: Dict[int, TracedProcess] = {}
        self._signatures: Dict[int, tuple] = {}
        self._versions: Dict[int, int] = {}  # pid -> TracedProcess.version last looked at
        self._refreshed = 0.0
        self._notes: Dict[str, None] = {}
        self.mapped_late: Dict[int, List[str]] = {}  # pid -> objects it mapped after its first load

    # ---- loading -------------------------------------------------------------
    def add(self, process: TracedProcess) -> None:
        """Have its tables built (already done if builds had it early); a fork of
        ours that has not exec'd waits for refresh()."""
        self._processes[process.pid] = process
        if is_unexeced_fork(process.pid):
            self._signatures[process.pid] = ()
            return
        self.builds.submit(process)
        if process.pid not in self._signatures:  # a reload keeps the tables it has meanwhile
            self.early.mark(process.pid)
        self.store_built()

    def store_built(self) -> None:
        """Write the tables the background builds finished."""
        for built in self.builds.finished():
            if built.process.pid in self._processes:
                self._store_built(built)

    def _store_built(self, built: Built) -> None:
        pid = built.process.pid
        if built.space is None:  # gone before its tables were built
            del self._processes[pid]
            self.early.finish(pid, written=False)
            return
        if not built.space.complete:  # the objects built so far; the others walk frame pointers
            if self._write_tables(built.space):
                self.early.finish(pid, written=True)
            return
        self._versions[pid] = built.version
        self._signatures[pid] = built.space.signature
        written = self._write_tables(built.space)
        self.early.finish(pid, written=written)

    def reload(self, process: TracedProcess) -> None:
        """Load the tables for what process maps now, before it runs on: `run` calls it once
        the loader has mapped the libraries (they are not mapped late). A background build
        of the maps at exec, still running, must not land over these afterwards."""
        self.builds.forget(process.pid)
        process.maps(fresh=True)
        self._load(process)

    def refresh(self) -> None:
        """Reload processes whose executable mappings changed; cheap when none did."""
        self.store_built()
        now = time.monotonic()
        if now - self._refreshed < REFRESH_S:
            return
        self._refreshed = now
        for pid, process in list(self._processes.items()):
            try:
                if is_unexeced_fork(pid) or self.builds.waiting(pid):
                    continue
                process.maps()
                if process.version == self._versions.get(pid):
                    continue
                known = {entry[-1] for entry in self._signatures[pid]}
                if signature_of(executable_mappings(process)) != self._signatures[pid]:
                    space = self._load(process)
                    if known:  # not the first load of a fork that has exec'd since
                        self.mapped_late.setdefault(pid, []).extend(
                            o.path for o in space.objects if o.path not in known)
                self._versions[pid] = process.version
            except LeaktraceError:
                del self._processes[pid]  # gone: its stacks stay readable

    def _load(self, process: TracedProcess) -> ProcessSpace:
        space = map_process(process)
        self._versions[space.pid] = process.version
        self._signatures[space.pid] = space.signature
        self.early.finish(space.pid, written=self._write_tables(space))
        return space

    def _write_tables(self, space: ProcessSpace) -> bool:
        """Whether the process's mappings were written (it walks with its tables)."""
        for obj in space.objects:
            if obj.problem:
                self._note(f"no unwind table for {obj.path} ({obj.problem}); frames inside it "
                           "are recovered with frame pointers only")
        if self.mode == "auto" and not space.needs_cfi:
            return False  # frame pointers everywhere: the kernel's walk is exact and cheaper
        slot = self._slot(space.pid)
        if slot is None:
            return False
        mappings = [m for m in (self._mapping(obj) for obj in space.objects) if m is not None]
        if len(mappings) > MAX_MAPPINGS:
            self._note(f"pid {space.pid} maps more than {MAX_MAPPINGS} executable objects; "
                       "frames in the others are recovered with frame pointers only")
            mappings = mappings[:MAX_MAPPINGS]
        self._write_space(space.pid, slot, mappings)
        return True

    def _slot(self, pid: int) -> Optional[int]:
        if pid not in self._slots:
            if len(self._slots) >= self.max_processes:
                self._note(f"more than {self.max_processes} processes: pid {pid} is unwound "
                           "with frame pointers only")
                return None
            self._slots[pid] = len(self._slots)
        return self._slots[pid]

    def _mapping(self, obj: MappedObject) -> Optional[tuple]:
        first, count = self._place(obj) if obj.table is not None else (0, 0)
        return (obj.start, obj.end, obj.bias & U64, first, count)

    def _place(self, obj: MappedObject) -> tuple:
        """Rows of obj's binary in unwind_rows, written on first use."""
        if obj.key in self._placed:
            return self._placed[obj.key]
        count = obj.table.count
        if self._next_row + count > self.max_rows:
            self._note(f"unwind row space full ({self.max_rows} rows): {obj.path} is unwound "
                       "with frame pointers only")
            return 0, 0
        first = self._next_row
        self._write_rows(first, obj.table.rows, count)
        self._next_row += count
        self._placed[obj.key] = (first, count)
        return first, count

    def _write_rows(self, first: int, rows: bytes, count: int) -> None:
        table = self.bpf["unwind_rows"]
        assert ctypes.sizeof(table.Leaf) == ROW.size, "struct unwind_row out of step with tables.ROW"
        keys = (table.Key * count)(*range(first, first + count))
        values = (table.Leaf * count).from_buffer_copy(rows)
        try:
            table.items_update_batch(keys, values)
        except Exception:  # kernels before 5.6 lack batch updates on arrays
            for key, value in zip(keys, values):
                table[key] = value

    def _write_space(self, pid: int, slot: int, mappings: List[tuple]) -> None:
        table = self.bpf["unwind_mappings"]
        first = slot * MAX_MAPPINGS
        for index, (start, end, bias, first_row, rows) in enumerate(sorted(mappings)):
            table[table.Key(first + index)] = table.Leaf(start, end, bias, first_row, rows)
        spaces = self.bpf["unwind_spaces"]
        spaces[spaces.Key(pid)] = spaces.Leaf(first, len(mappings))

    # ---- reading ------------------------------------------------------------
    def read_stack(self, stack_id: int) -> Optional[RawStack]:
        try:
            stack = self.bpf["unwound_stacks"][ctypes.c_uint32(stack_id)]
        except KeyError:
            return None
        depth = min(stack.depth, self.max_depth)
        methods = tuple("cfi" if stack.cfi_frames[i // 64] >> (i % 64) & 1 else "fp" for i in range(depth))
        stop = UNKNOWN_CODE_STOP if stack.stop == STOP_UNKNOWN_CODE else ""
        return RawStack(tuple(stack.addrs[i] for i in range(depth)), methods, stop)

    def counters(self) -> Dict[str, int]:
        table = self.bpf["unwind_counters"]
        return {name: int(sum(table[ctypes.c_int(i)])) for i, name in enumerate(COUNTERS)}

    def notes(self, buckets: Sequence[Bucket] = ()) -> List[str]:
        """Why stacks may be incomplete; buckets: the snapshot's, to count the
        allocations walked with frame pointers while their tables loaded."""
        counts = self.counters()
        live = []
        if counts["collisions"]:
            live.append(f"{counts['collisions']} allocations lost their stack to a stack hash "
                        "collision (counted under \"stack not collected\")")
        if counts["truncated"]:
            live.append(f"some stacks are deeper than {self.max_depth} frames and were cut there")
        if counts["unknown_code"]:
            live.append(f"{counts['unknown_code']} allocations have stacks that stop in code mapped after "
                        "its unwind tables were loaded (a dlopen in the last fraction of a second): their "
                        "callers are missing; later ones through that code are complete")
        if counts["map_full"]:
            live.append("the unwound stack map is full (--max-stacks): new stacks are not collected")
        return list(self._notes) + live + self._early_notes(buckets)

    def _early_notes(self, buckets: Sequence[Bucket]) -> List[str]:
        """A stack_traces stack of a process that has tables was walked before they arrived."""
        walked: Dict[int, int] = {}
        for bucket in buckets:
            if bucket.stack.stack_id >= 0 and not is_unwound(bucket.stack.stack_id):
                walked[bucket.pid] = walked.get(bucket.pid, 0) + bucket.count
        return early_notes({pid: walked.get(pid, 0) for pid in sorted(self.early.loaded)},
                           {pid: walked.get(pid, 0) for pid in sorted(self.early.loading)})

    def _note(self, text: str) -> None:
        self._notes.setdefault(text, None)
