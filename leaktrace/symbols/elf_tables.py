"""Read an ELF file's function symbols, build-id and debuglink, within bounds.

Contract: each reader takes a pyelftools ELFFile and the file's size, checks
that every section it reads lies inside the file, and raises ElfError (via
the caller) or returns None for what is absent. Symbol tables are decoded
with struct.iter_unpack rather than pyelftools' per-symbol objects: a large
.symtab has hundreds of thousands of entries, and this is ~50x faster.
"""
from __future__ import annotations

import struct
from bisect import bisect_right
from typing import Dict, List, Optional, Tuple

MAX_SYMBOLS = 4_000_000
STT_FUNC, STT_GNU_IFUNC = 2, 10
STB_LOCAL = 0
EM_ARM = 40

# (name, value, size, binding) of one defined function symbol
Symbol = Tuple[str, int, int, int]


class TableError(Exception):
    """A table is malformed; ElfSymbols turns it into ElfError with the path."""


def _section_data(section, size: int) -> bytes:
    if section["sh_type"] == "SHT_NOBITS":
        return b""
    if section["sh_offset"] + section["sh_size"] > size:
        raise TableError(f"section {section.name or '?'} lies beyond the end of the file")
    return section.data()


def _symbol_fields(elf) -> Tuple[str, int, Tuple[int, int, int, int, int]]:
    """struct format, entry size, and field positions (name, value, size, info, shndx)."""
    endian = "<" if elf.little_endian else ">"
    if elf.elfclass == 64:
        return endian + "IBBHQQ", 24, (0, 4, 5, 1, 3)
    return endian + "IIIBBH", 16, (0, 1, 2, 3, 5)


def _decode_symbols(elf, section, size: int) -> List[Symbol]:
    fmt, entsize, (i_name, i_value, i_size, i_info, i_shndx) = _symbol_fields(elf)
    if section["sh_entsize"] != entsize:
        raise TableError(f"{section.name}: unexpected symbol entry size {section['sh_entsize']}")
    count = section["sh_size"] // entsize
    if count > MAX_SYMBOLS:
        raise TableError(f"{section.name}: {count} symbols is more than any real binary has")
    link = section["sh_link"]
    if not 0 < link < elf.num_sections():
        raise TableError(f"{section.name}: string table index {link} is out of range")
    strings = _section_data(elf.get_section(link), size)
    data = _section_data(section, size)[: count * entsize]
    thumb_bit = ~1 if elf["e_machine"] == "EM_ARM" else ~0
    symbols = []
    for fields in struct.iter_unpack(fmt, data):
        info, value = fields[i_info], fields[i_value]
        if info & 0xF not in (STT_FUNC, STT_GNU_IFUNC) or fields[i_shndx] == 0 or value == 0:
            continue
        start = fields[i_name]
        end = strings.find(b"\0", start)
        if start >= len(strings) or end < 0:
            continue
        # "pthread_create@GLIBC_2.2.5": the version is noise in a stack.
        name = strings[start:end].decode("utf-8", "replace").partition("@")[0]
        symbols.append((name, value & thumb_bit, fields[i_size], info >> 4))
    return symbols


def read_function_symbols(elf, size: int) -> Tuple[List[Symbol], bool]:
    """Defined functions from .symtab, else .dynsym; and whether .symtab was used."""
    for section_type in ("SHT_SYMTAB", "SHT_DYNSYM"):
        for section in elf.iter_sections():
            if section["sh_type"] == section_type and section["sh_size"]:
                return _decode_symbols(elf, section, size), section_type == "SHT_SYMTAB"
    return [], False


def read_build_id(elf, size: int) -> Optional[str]:
    """The GNU build-id as lowercase hex, from note sections or PT_NOTE segments."""
    notes = [(s, s["sh_offset"], s["sh_size"])
             for s in elf.iter_sections() if s["sh_type"] == "SHT_NOTE"]
    if not notes:
        notes = [(s, s["p_offset"], s["p_filesz"])
                 for s in elf.iter_segments() if s["p_type"] == "PT_NOTE"]
    for holder, offset, length in notes:
        if offset + length > size:
            raise TableError("a note lies beyond the end of the file")
        for note in holder.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID" and isinstance(note["n_desc"], str):
                return note["n_desc"].lower()
    return None


def read_debuglink(elf, size: int) -> Optional[Tuple[str, int]]:
    """(file name, CRC32) from .gnu_debuglink, or None."""
    section = elf.get_section_by_name(".gnu_debuglink")
    if section is None:
        return None
    data = _section_data(section, size)
    end = data.find(b"\0")
    crc_at = (end + 4) & ~3  # the CRC follows the name, 4-byte aligned
    if end <= 0 or crc_at + 4 > len(data):
        return None
    endian = "<" if elf.little_endian else ">"
    (crc,) = struct.unpack_from(endian + "I", data, crc_at)
    name = data[:end].decode("utf-8", "replace")
    if "/" in name:
        return None  # a debuglink names a file, never a path
    return name, crc


def _preference(symbol: Symbol) -> tuple:
    # At one address, prefer a sized, global symbol with fewer leading underscores.
    name, _, sym_size, binding = symbol
    return (sym_size > 0, binding != STB_LOCAL, -(len(name) - len(name.lstrip("_"))))


class FunctionTable:
    """Address-sorted function symbols with bisect lookup, plus a name index."""

    def __init__(self, symbols: List[Symbol]):
        best: Dict[int, Symbol] = {}
        self._by_name: Dict[str, Tuple[int, int]] = {}
        for symbol in symbols:
            name, value, sym_size, _ = symbol
            held = best.get(value)
            if held is None or _preference(symbol) > _preference(held):
                best[value] = symbol
            known = self._by_name.get(name)
            if known is None or (known[1] == 0 and sym_size > 0):
                self._by_name[name] = (value, sym_size)
        ordered = sorted(best.values(), key=lambda symbol: symbol[1])
        self._starts = [symbol[1] for symbol in ordered]
        self._symbols = ordered

    def __len__(self) -> int:
        return len(self._symbols)

    def lookup(self, vaddr: int, limit: int) -> Optional[Tuple[str, int]]:
        """The symbol holding vaddr; an unsized one extends to the next or to `limit`."""
        index = bisect_right(self._starts, vaddr) - 1
        if index < 0:
            return None
        name, start, sym_size, _ = self._symbols[index]
        end = start + sym_size if sym_size else limit
        return (name, vaddr - start) if vaddr < end else None

    def find(self, name: str) -> Optional[Tuple[int, int]]:
        return self._by_name.get(name)
