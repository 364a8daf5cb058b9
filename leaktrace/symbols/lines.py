"""Source file and line of an address, from an ELF file's DWARF line tables.

Contract: LineTable(elffile).lookup(vaddr) returns (file, line) or None. It
reads only the compilation unit that .debug_aranges names for the address
(or, without aranges, every unit once), caches what it read, and turns any
DWARF parsing failure into None: lines are a nicety, never a reason to fail.
"""
from __future__ import annotations

import posixpath
from bisect import bisect_right
from typing import Dict, List, Optional, Tuple

# (address, file, line); file is None for an end-of-sequence marker
Row = Tuple[int, Optional[str], int]


def _file_name(header, index: int) -> Optional[str]:
    # DWARF 5 numbers files and directories from 0, earlier versions from 1.
    version = header["version"]
    position = index if version >= 5 else index - 1
    files = header["file_entry"]
    if not 0 <= position < len(files):
        return None
    entry = files[position]
    name = entry.name.decode("utf-8", "replace") if isinstance(entry.name, bytes) else entry.name
    dirs = header["include_directory"]
    dir_position = entry.dir_index if version >= 5 else entry.dir_index - 1
    # Directory 0 is the compilation directory: leave such names as written.
    if entry.dir_index and 0 <= dir_position < len(dirs) and not name.startswith("/"):
        directory = dirs[dir_position]
        if isinstance(directory, bytes):
            directory = directory.decode("utf-8", "replace")
        name = posixpath.join(directory, name)
    return name


def _rows_of(dwarf, cu) -> List[Row]:
    program = dwarf.line_program_for_CU(cu)
    if program is None:
        return []
    rows: List[Row] = []
    for entry in program.get_entries():
        state = entry.state
        if state is None:
            continue
        if state.end_sequence:
            rows.append((state.address, None, 0))
        else:
            rows.append((state.address, _file_name(program.header, state.file), state.line))
    return rows


class _Rows:
    def __init__(self, rows: List[Row]):
        # At one address an end marker sorts before the next sequence's start.
        rows.sort(key=lambda row: (row[0], row[1] is not None))
        self.starts = [row[0] for row in rows]
        self.rows = rows

    def lookup(self, vaddr: int) -> Optional[Tuple[str, int]]:
        index = bisect_right(self.starts, vaddr) - 1
        if index < 0:
            return None
        _, file, line = self.rows[index]
        return (file, line) if file is not None and line > 0 else None


class LineTable:
    def __init__(self, elffile):
        self._elf = elffile
        self._dwarf = None
        self._aranges = None
        self._by_cu: Dict[int, _Rows] = {}
        self._everything: Optional[_Rows] = None
        self._broken = False

    def lookup(self, vaddr: int) -> Optional[Tuple[str, int]]:
        if self._broken:
            return None
        try:
            return self._lookup(vaddr)
        except Exception:  # pyelftools raises many types on damaged DWARF
            self._broken = True
            return None

    def _lookup(self, vaddr: int) -> Optional[Tuple[str, int]]:
        if self._dwarf is None:
            if self._elf.get_section_by_name(".debug_line") is None:
                self._broken = True
                return None
            self._dwarf = self._elf.get_dwarf_info()
            self._aranges = self._dwarf.get_aranges()
        if self._aranges is not None:
            offset = self._aranges.cu_offset_at_addr(vaddr)
            if offset is not None:
                return self._cu_rows(offset).lookup(vaddr)
        if self._everything is None:
            rows: List[Row] = []
            for cu in self._dwarf.iter_CUs():
                rows.extend(_rows_of(self._dwarf, cu))
            self._everything = _Rows(rows)
        return self._everything.lookup(vaddr)

    def _cu_rows(self, offset: int) -> _Rows:
        if offset not in self._by_cu:
            cu = self._dwarf.get_CU_at(offset)
            self._by_cu[offset] = _Rows(_rows_of(self._dwarf, cu))
        return self._by_cu[offset]
