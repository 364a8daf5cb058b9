"""Function symbols, build-id and load segments of one ELF file (pyelftools).

Contract: open_elf(path) returns an ElfSymbols, parsed once per run for each
distinct file (keyed by device, inode, size and mtime, so a rebuilt binary is
read again). Anything that is not a sane ELF file - garbage, truncated,
hostile header counts, a FIFO, a symlink loop - raises ElfError quickly;
nothing else escapes. DWARF line tables are read only when line_for() is
first called, and a broken line table makes line_for() return None.

Addresses here are the file's own virtual addresses (st_value, p_vaddr);
runtime_to_vaddr() turns a process address into one, given its mapping.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from elftools.elf.elffile import ELFFile

from ..errors import LeaktraceError
from .elf_tables import (
    FunctionTable,
    TableError,
    read_build_id,
    read_debuglink,
    read_function_symbols,
)

MAX_FILE_SIZE = 8 << 30  # debug files of the largest real binaries are a few GiB
MAX_SECTIONS = 1 << 16
MAX_SEGMENTS = 1 << 12
PAGE_SIZE = 4096
PF_X = 1


class ElfError(LeaktraceError):
    """A file could not be read as an ELF object."""


@dataclass(frozen=True)
class LoadSegment:
    """One PT_LOAD program header."""

    vaddr: int
    offset: int
    filesz: int
    memsz: int
    executable: bool


def segment_for_offset(
    segments: Sequence[LoadSegment], file_offset: int, executable: Optional[bool] = None
) -> Optional[LoadSegment]:
    """The PT_LOAD segment holding `file_offset`; prefer one whose X flag matches."""
    exact = [s for s in segments if s.offset <= file_offset < s.offset + max(s.filesz, 1)]
    # mmap works in pages: a mapping may start below p_offset in the same page.
    paged = exact or [
        s for s in segments
        if s.offset - s.offset % PAGE_SIZE <= file_offset < s.offset + s.filesz + PAGE_SIZE
    ]
    if executable is not None:
        matching = [s for s in paged if s.executable == executable]
        paged = matching or paged
    return paged[0] if paged else None


def runtime_to_vaddr(
    addr: int,
    map_start: int,
    map_offset: int,
    segments: Sequence[LoadSegment],
    executable: Optional[bool] = None,
) -> Optional[int]:
    """Turn a process address into the ELF file's virtual address.

    vaddr = addr - map_start + map_offset + (p_vaddr - p_offset) for the
    PT_LOAD segment holding that file offset. This one formula covers PIE
    executables, non-PIE (ET_EXEC, where it comes out as addr) and shared
    libraries. None when no segment holds the offset.
    """
    file_offset = addr - map_start + map_offset
    segment = segment_for_offset(segments, file_offset, executable)
    if segment is None:
        return None
    return file_offset + segment.vaddr - segment.offset


class ElfSymbols:
    """The parts of one ELF file that symbolization needs."""

    def __init__(self, path: str):
        self.path = path
        self._file, size = _open_regular(path)
        try:
            self._elf = _parse_header(self._file, size, path)
            self.segments = _load_segments(self._elf)
            self.build_id = read_build_id(self._elf, size)
            self.debuglink = read_debuglink(self._elf, size)
            functions, from_symtab = read_function_symbols(self._elf, size)
        except ElfError:
            self._file.close()
            raise
        except TableError as exc:
            self._file.close()
            raise ElfError(f"{path}: {exc}") from None
        except Exception as exc:  # pyelftools raises many types on hostile input
            self._file.close()
            detail = " ".join(str(exc).split())[:120]  # one line, however odd the input
            raise ElfError(f"{path}: malformed ELF ({type(exc).__name__}: {detail})") from None
        self._functions = FunctionTable(functions)
        self.has_debug_symbols = from_symtab and len(self._functions) > 0
        self._lines = None

    def __repr__(self) -> str:
        return f"ElfSymbols({self.path!r}, build_id={self.build_id})"

    @property
    def function_count(self) -> int:
        return len(self._functions)

    def lookup(self, vaddr: int) -> Optional[Tuple[str, int]]:
        """(name, offset into it) of the function holding `vaddr`, or None."""
        return self._functions.lookup(vaddr, self._segment_end(vaddr))

    def find_function(self, name: str) -> Optional[Tuple[int, int]]:
        """(vaddr, size) of a defined function symbol named `name`."""
        return self._functions.find(name)

    @property
    def needed(self) -> Tuple[str, ...]:
        """DT_NEEDED sonames in link order (allocator discovery for `run`)."""
        try:
            dynamic = self._elf.get_section_by_name(".dynamic")
            if dynamic is None:
                return ()
            return tuple(tag.needed for tag in dynamic.iter_tags() if tag.entry.d_tag == "DT_NEEDED")
        except Exception:  # damaged dynamic section: no dependencies known
            return ()

    def segment_for_offset(self, file_offset: int) -> Optional[LoadSegment]:
        return segment_for_offset(self.segments, file_offset)

    def file_offset_to_vaddr(self, file_offset: int) -> Optional[int]:
        segment = self.segment_for_offset(file_offset)
        return None if segment is None else file_offset + segment.vaddr - segment.offset

    @property
    def has_dwarf(self) -> bool:
        """Whether the file has DWARF line tables (for line_for)."""
        try:
            section = self._elf.get_section_by_name(".debug_line")
            return section is not None and section["sh_type"] != "SHT_NOBITS"
        except Exception:  # a damaged section table: no usable DWARF
            return False

    def line_for(self, vaddr: int) -> Optional[Tuple[str, int]]:
        """(source file, line) from DWARF, or None; parses DWARF on first use."""
        if self._lines is None:
            from .lines import LineTable  # DWARF support is only paid for with --lines

            self._lines = LineTable(self._elf)
        return self._lines.lookup(vaddr)

    def close(self) -> None:
        self._file.close()

    def _segment_end(self, vaddr: int) -> int:
        # Bounds an unsized (assembly) symbol to the segment it lives in.
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.memsz:
                return seg.vaddr + seg.memsz
        return vaddr + 1


def _open_regular(path: str):
    # O_NONBLOCK: opening a FIFO planted where a binary should be must not hang.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ElfError(f"cannot open {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ElfError(f"{path} is not a regular file")
    if info.st_size > MAX_FILE_SIZE:
        os.close(fd)
        raise ElfError(f"{path} is too large to be a binary ({info.st_size} bytes)")
    return os.fdopen(fd, "rb"), info.st_size


def _parse_header(stream, size: int, path: str) -> ELFFile:
    ident = stream.read(16)
    stream.seek(0)
    if len(ident) < 16 or ident[:4] != b"\x7fELF":
        raise ElfError(f"{path} is not an ELF file")
    if ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise ElfError(f"{path}: unknown ELF class or byte order")
    elf = ELFFile(stream)
    header = elf.header
    tables = (
        (header["e_shoff"], header["e_shnum"], header["e_shentsize"], MAX_SECTIONS, "section"),
        (header["e_phoff"], header["e_phnum"], header["e_phentsize"], MAX_SEGMENTS, "program"),
    )
    for offset, count, entsize, limit, what in tables:
        if count > limit or (count and offset + count * entsize > size):
            raise ElfError(f"{path}: {what} header table is out of bounds")
    if header["e_shoff"] and elf.num_sections() > MAX_SECTIONS:
        raise ElfError(f"{path}: too many sections")
    return elf


def _load_segments(elf: ELFFile) -> Tuple[LoadSegment, ...]:
    segments = []
    for segment in elf.iter_segments():
        if segment["p_type"] != "PT_LOAD":
            continue
        segments.append(LoadSegment(
            vaddr=segment["p_vaddr"],
            offset=segment["p_offset"],
            filesz=segment["p_filesz"],
            memsz=segment["p_memsz"],
            executable=bool(segment["p_flags"] & PF_X),
        ))
    return tuple(segments)


_cache: Dict[tuple, object] = {}


def open_elf(path: str) -> ElfSymbols:
    """ElfSymbols for `path`, parsed once per distinct file per run.

    Failures are cached too, so a broken file costs one attempt.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ElfError(f"cannot open {path}: {exc.strerror}") from None
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    cached = _cache.get(key)
    if cached is None:
        try:
            cached = ElfSymbols(path)
        except ElfError as exc:
            cached = exc
        _cache[key] = cached
    if isinstance(cached, ElfError):
        raise ElfError(cached.message, cached.hint)
    return cached


def clear_cache() -> None:
    """Forget every parsed file (tests; a long-running daemon between runs)."""
    for value in _cache.values():
        if isinstance(value, ElfSymbols):
            value.close()
    _cache.clear()
