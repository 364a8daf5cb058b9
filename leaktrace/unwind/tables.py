"""Compact unwind tables, one per binary, cached per build-id.

Contract: table_for(path, build_id) returns an UnwindTable: the rows of
struct unwind_row (bpf/unwind.h) for every address the binary's .eh_frame
(or, without one, .debug_frame) describes, sorted by address and keyed by
the file's own virtual addresses, so one table serves every process that
maps the binary, wherever it is loaded. A gap between two functions gets a
ROW_NONE row, so an address there is never unwound with a neighbour's rule.
Tables are cached in memory for the run and on disk under the build-id (the
cache's unwind/ directory, leaktrace/base/cache.py): parsing libc's .eh_frame
takes about half a second, loading a cached table a millisecond. A table
read back must be whole, sorted, of known row kinds and inside the binary's
executable segments (valid_rows), or it is rebuilt from the file. A binary
without usable CFI raises TableUnavailable.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from elftools.dwarf.callframe import FDE
from elftools.elf.elffile import ELFFile

from ..base import cache
from ..base.errors import LeaktraceError
from .cfi import RBP, ROW_NONE, ROW_SIGNAL, CfiError, encode, is_signal_frame, rules_of

ROW = struct.Struct("<IhBb")  # struct unwind_row: pc, cfa_off, kind, rbp_slot
CACHE_MAGIC = b"LTUW2\0"
HEADER = struct.Struct("<6sIB")  # magic, row count, uses frame pointers
MAX_PC = 1 << 32
MAX_ROWS = 1 << 24  # a cached table longer than this is not one build_rows made
PF_X = 0x1
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


def _text_range(path: str) -> Optional[Tuple[int, int]]:
    """[lowest, highest] address of the binary's executable segments, from its program headers."""
    try:
        with open(path, "rb") as stream:
            spans = [(seg["p_vaddr"], seg["p_vaddr"] + seg["p_memsz"])
                     for seg in ELFFile(stream).iter_segments()
                     if seg["p_type"] == "PT_LOAD" and seg["p_flags"] & PF_X]
    except Exception:  # pyelftools raises many types on damaged files
        return None
    return (min(s for s, _ in spans), max(e for _, e in spans)) if spans else None


def valid_rows(rows: bytes, text: Optional[Tuple[int, int]]) -> bool:
    """Rows as build_rows makes them: whole, in address order, of known kinds,
    and inside the binary's code (its end included: the last function's end row)."""
    if len(rows) % ROW.size or len(rows) > MAX_ROWS * ROW.size or text is None:
        return False
    previous = -1
    for pc, _, kind, _ in ROW.iter_unpack(rows):
        if pc < previous or kind > ROW_SIGNAL or not text[0] <= pc <= text[1]:
            return False
        previous = pc
    return True


def _load_cached(file: Path, path: str) -> Optional[UnwindTable]:
    data = cache.read_bytes(file)
    try:
        magic, count, frame_pointers = HEADER.unpack_from(data or b"")
    except struct.error:
        return None
    rows = data[HEADER.size:]
    if magic != CACHE_MAGIC or len(rows) != count * ROW.size:
        return None  # another version, or a torn write: rebuild
    if not valid_rows(rows, _text_range(path)):
        return None  # not this binary's table (planted, or a build-id reused): rebuild
    return UnwindTable(rows, bool(frame_pointers))


def _store_cached(file: Path, table: UnwindTable) -> None:
    cache.write_bytes(file, HEADER.pack(CACHE_MAGIC, table.count, table.frame_pointers) + table.rows)


_memory: Dict[str, UnwindTable] = {}


def table_for(path: str, build_id: Optional[str]) -> UnwindTable:
    """The table of the binary at path, from the caches when its build-id is known."""
    key = build_id or f"file:{path}"
    if key in _memory:
        return _memory[key]
    directory = cache.directory("unwind") if build_id else None
    file = directory / f"{build_id}.rows" if directory else None
    table = _load_cached(file, path) if file else None
    if table is None:
        table = read_table(path)
        if file:
            _store_cached(file, table)
    _memory[key] = table
    return table
