"""Compact unwind tables, one per binary, cached per build-id.

Contract: table_for(path, build_id) returns an UnwindTable: the rows of
struct unwind_row (bpf/unwind.h) for every address the binary's .eh_frame
(or, without one, .debug_frame) describes, sorted by address and keyed by
the file's own virtual addresses, so one table serves every process that
maps the binary, wherever it is loaded. A gap between two functions gets a
ROW_NONE row, so an address there is never unwound with a neighbour's rule.
Tables are cached in memory for the run and on disk under the build-id
(LEAKTRACE_CACHE_DIR, else $XDG_CACHE_HOME/leaktrace/unwind): parsing
libc's .eh_frame takes about half a second, loading a cached table a
millisecond. A binary without usable CFI raises TableUnavailable.
"""
from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from elftools.dwarf.callframe import FDE
from elftools.elf.elffile import ELFFile

from ..errors import LeaktraceError
from .cfi import RBP, ROW_NONE, CfiError, encode, is_signal_frame, rules_of

ROW = struct.Struct("<IhBb")  # struct unwind_row: pc, cfa_off, kind, rbp_slot
CACHE_MAGIC = b"LTUW2\0"
HEADER = struct.Struct("<6sIB")  # magic, row count, uses frame pointers
MAX_PC = 1 << 32
# A function of at least this many bytes that keeps frame pointers moves its CFA to rbp.
FP_FUNCTION_BYTES = 32
FP_SHARE = 0.5


class TableUnavailable(LeaktraceError):
    """A binary has no call-frame information the walker can use."""


@dataclass(frozen=True)
class UnwindTable:
    rows: bytes  # packed struct unwind_row, sorted by pc
    frame_pointers: bool  # most of its functions keep a frame pointer

    @property
    def count(self) -> int:
        return len(self.rows) // ROW.size

    def row(self, index: int) -> Tuple[int, int, int, int]:
        """(pc, cfa_off, kind, rbp_slot) of one row."""
        return ROW.unpack_from(self.rows, index * ROW.size)

    def lookup(self, vaddr: int) -> Optional[Tuple[int, int, int, int]]:
        """The row in force at vaddr, as the BPF walker finds it (binary search)."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.row(mid)[0] <= vaddr:
                lo = mid + 1
            else:
                hi = mid
        return self.row(lo - 1) if lo else None


def _cfi_entries(elf: ELFFile) -> list:
    dwarf = elf.get_dwarf_info(follow_links=False)
    if dwarf.has_EH_CFI():
        return dwarf.EH_CFI_entries()
    if dwarf.has_CFI():
        return dwarf.CFI_entries()
    raise TableUnavailable("no .eh_frame or .debug_frame")


def _fde_rows(fde) -> List[Tuple[int, int, int, int]]:
    if is_signal_frame(fde):
        return [(fde["initial_location"], *encode(None, signal=True))]
    return [(pc, *encode(state)) for pc, state in rules_of(fde)]


def _keeps_frame_pointer(fde) -> bool:
    return any(state.cfa_reg == RBP for _, state in rules_of(fde))


def build_rows(elf: ELFFile) -> UnwindTable:
    """Interpret every FDE of the binary into sorted, coalesced rows."""
    fdes = sorted((e for e in _cfi_entries(elf) if isinstance(e, FDE)),
                  key=lambda fde: fde["initial_location"])
    rows: List[Tuple[int, int, int, int]] = []
    sized = with_fp = 0
    for index, fde in enumerate(fdes):
        start, end = fde["initial_location"], fde["initial_location"] + fde["address_range"]
        if fde["address_range"] == 0:
            continue
        rows.extend(_fde_rows(fde))
        following = fdes[index + 1]["initial_location"] if index + 1 < len(fdes) else None
        if following != end:
            rows.append((end, ROW_NONE, 0, 0))
        if fde["address_range"] >= FP_FUNCTION_BYTES:
            sized += 1
            with_fp += _keeps_frame_pointer(fde)
    packed = bytearray()
    previous = None
    for pc, kind, cfa_off, rbp_slot in rows:
        if pc >= MAX_PC:
            raise TableUnavailable("code above 4 GiB in the file's address space")
        if (kind, cfa_off, rbp_slot) == previous:
            continue  # same rules as the row before: one row covers both
        previous = (kind, cfa_off, rbp_slot)
        packed += ROW.pack(pc, cfa_off, kind, rbp_slot)
    return UnwindTable(bytes(packed), frame_pointers=bool(sized) and with_fp >= sized * FP_SHARE)


def read_table(path: str) -> UnwindTable:
    """Build the table of one binary from its file (no caching)."""
    try:
        with open(path, "rb") as stream:
            return build_rows(ELFFile(stream))
    except TableUnavailable as exc:
        raise TableUnavailable(f"{path}: {exc.message}") from None
    except CfiError as exc:
        raise TableUnavailable(f"{path}: {exc}") from None
    except Exception as exc:  # pyelftools raises many types on damaged files
        raise TableUnavailable(f"{path}: unreadable CFI ({type(exc).__name__}: {exc})") from None


def cache_dir() -> Path:
    explicit = os.environ.get("LEAKTRACE_CACHE_DIR")
    if explicit:
        return Path(explicit) / "unwind"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "leaktrace" / "unwind"


def _load_cached(file: Path) -> Optional[UnwindTable]:
    try:
        data = file.read_bytes()
        magic, count, frame_pointers = HEADER.unpack_from(data)
    except (OSError, struct.error):
        return None
    rows = data[HEADER.size:]
    if magic != CACHE_MAGIC or len(rows) != count * ROW.size:
        return None  # another version, or a torn write: rebuild
    return UnwindTable(rows, bool(frame_pointers))


def _store_cached(file: Path, table: UnwindTable) -> None:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=file.parent, delete=False) as out:
            out.write(HEADER.pack(CACHE_MAGIC, table.count, table.frame_pointers) + table.rows)
        os.replace(out.name, file)
    except OSError:
        pass  # a read-only home only costs the next run a re-parse


_memory: Dict[str, UnwindTable] = {}


def table_for(path: str, build_id: Optional[str]) -> UnwindTable:
    """The table of the binary at path, from the caches when its build-id is known."""
    key = build_id or f"file:{path}"
    if key in _memory:
        return _memory[key]
    file = cache_dir() / f"{build_id}.rows" if build_id else None
    table = _load_cached(file) if file else None
    if table is None:
        table = read_table(path)
        if file:
            _store_cached(file, table)
    _memory[key] = table
    return table
