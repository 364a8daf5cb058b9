"""Which unwind table covers which addresses of one process.

Contract: map_process(process), for a TracedProcess (its maps and pinned
root come from it), returns a ProcessSpace:
one MappedObject per executable file mapping, with the load bias that turns
its runtime addresses into the file's virtual addresses (the ones its rows
use) and its UnwindTable, or the reason there is none. It opens the mapped
file through /proc/PID/map_files (the very file, even if deleted), else
inside the process's root (symbols.elf.open_elf_in_root, which never leaves
it), and builds the table from that open file (its /proc/self/fd path), so
no path is resolved twice and container binaries are read correctly. It
raises TargetError / PermissionProblem (from its maps) and nothing else:
one unreadable object costs that object its table, not the process.
map_process_in_steps(process) yields the same space as it is built, smallest
mapping first (the program's own code usually before the big libraries):
partial spaces (complete=False; objects not built yet have no table and no
problem) at most every STEP_S, then the complete one.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from ..base.errors import LeaktraceError
from ..symbols.elf import ElfSymbols, open_elf, open_elf_in_root, segment_for_offset
from ..symbols.maps import MapEntry
from ..process.traced_process import TracedProcess
from .tables import UnwindTable, read_table, table_for

STEP_S = 0.2  # map_process_in_steps: a partial space no more often than this


@dataclass(frozen=True)
class MappedObject:
    start: int
    end: int
    bias: int  # runtime address - file virtual address
    path: str
    key: str  # build-id, or the path when there is none: identifies the table
    table: Optional[UnwindTable]
    problem: str = ""  # why there is no table


@dataclass(frozen=True)
class ProcessSpace:
    pid: int
    objects: Tuple[MappedObject, ...]
    signature: Tuple  # changes when the executable mappings change (exec, dlopen)
    complete: bool = True  # False: some objects' tables are not built yet (map_process_in_steps)

    @property
    def needs_cfi(self) -> bool:
        """Some object with a table was built without frame pointers."""
        return any(o.table is not None and not o.table.frame_pointers for o in self.objects)


def executable_mappings(process: TracedProcess) -> List[MapEntry]:
    return [e for e in process.maps() if e.executable and e.file_backed]


def signature_of(entries: List[MapEntry]) -> Tuple:
    return tuple((e.start, e.end, e.offset, e.inode, e.path) for e in entries)


def _open_mapped(process: TracedProcess, entry: MapEntry) -> ElfSymbols:
    opens: List[Callable[[], ElfSymbols]] = [
        lambda: open_elf(f"/proc/{process.pid}/map_files/{entry.start:x}-{entry.end:x}")]
    if not entry.deleted:
        opens.append(lambda: open_elf_in_root(process.root, entry.path))
    problem = None
    for open_one in opens:
        try:
            return open_one()
        except LeaktraceError as exc:
            problem = exc
    raise problem


# Tables of files without a build-id, by file version: table_for would key them by
# path, and a /proc/self/fd/N path names another file once N is reused.
_unnamed_tables: Dict[Tuple[int, int, int, int], UnwindTable] = {}


def _table_of(binary: ElfSymbols) -> UnwindTable:
    if binary.build_id:
        return table_for(binary.reopen_path, binary.build_id)
    table = _unnamed_tables.get(binary.version)
    if table is None:
        table = _unnamed_tables[binary.version] = read_table(binary.reopen_path)
    return table


def map_object(process: TracedProcess, entry: MapEntry) -> MappedObject:
    try:
        binary = _open_mapped(process, entry)
    except LeaktraceError as exc:
        return MappedObject(entry.start, entry.end, 0, entry.path, entry.path, None, exc.message)
    segment = segment_for_offset(binary.segments, entry.offset, executable=True)
    if segment is None:
        return MappedObject(entry.start, entry.end, 0, entry.path, entry.path, None,
                            "mapping matches no loadable segment")
    bias = entry.start - entry.offset - (segment.vaddr - segment.offset)
    key = binary.build_id or f"{entry.dev}:{entry.inode}:{entry.path}"
    try:
        table = _table_of(binary)
    except LeaktraceError as exc:
        problem = exc.message.replace(binary.reopen_path, entry.path)
        return MappedObject(entry.start, entry.end, bias, entry.path, key, None, problem)
    return MappedObject(entry.start, entry.end, bias, entry.path, key, table)


def map_process(process: TracedProcess) -> ProcessSpace:
    entries = executable_mappings(process)
    objects = tuple(map_object(process, entry) for entry in entries)
    return ProcessSpace(process.pid, objects, signature_of(entries))


def map_process_in_steps(process: TracedProcess) -> Iterator[ProcessSpace]:
    entries = executable_mappings(process)
    objects: List[MappedObject] = [MappedObject(e.start, e.end, 0, e.path, e.path, None) for e in entries]
    shown = time.monotonic()
    smallest_first = sorted(range(len(entries)), key=lambda i: entries[i].end - entries[i].start)
    for built, index in enumerate(smallest_first, start=1):
        objects[index] = map_object(process, entries[index])
        if built < len(entries) and time.monotonic() - shown >= STEP_S:
            shown = time.monotonic()
            yield ProcessSpace(process.pid, tuple(objects), signature_of(entries), complete=False)
    yield ProcessSpace(process.pid, tuple(objects), signature_of(entries))


def is_unexeced_fork(pid: int) -> bool:
    """A child of ours that has not exec'd yet (`leaktrace run`): its maps are ours."""
    try:
        return os.path.samefile(f"/proc/{pid}/exe", "/proc/self/exe")
    except OSError:
        return False
