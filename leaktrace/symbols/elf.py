"""Function symbols, build-id and load segments of one ELF file (pyelftools).

Contract: open_elf(path) returns an ElfSymbols, parsed once per run for each
distinct file (keyed by device, inode, size and mtime, so a rebuilt binary is
read again); open_elf_in_root(root, path) does the same for a path inside a
container's root (paths.open_in_root), and open_elf_fd(fd, name) for a file
already opened. Each reads the descriptor it opened, never the path again,
and an ElfSymbols keeps that descriptor: reopen_path names that very file
for readers that want a path. Anything that is not a sane ELF file - garbage,
truncated, hostile header counts, a FIFO, a symlink loop - raises ElfError
quickly; nothing else escapes. read_build_id_note(fd) reads only the
build-id note, for checking a file before parsing it. DWARF line tables are
read only when line_for() is first called, and a broken line table makes
line_for() return None.

Addresses here are the file's own virtual addresses (st_value, p_vaddr);
runtime_to_vaddr() turns a process address into one, given its mapping.
"""
from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from elftools.elf.elffile import ELFFile

from ..base.errors import LeaktraceError
from .elf_tables import (
    FunctionTable,
    TableError,
    read_build_id,
    read_debuglink,
    read_function_symbols,
)
from .paths import READ_FLAGS, PathResolveError, open_in_root

MAX_FILE_SIZE = 8 << 30  # debug files of the largest real binaries are a few GiB
MAX_SECTIONS = 1 << 16
MAX_SEGMENTS = 1 << 12
PAGE_SIZE = 4096
PF_X = 1
PT_NOTE = 4
NT_GNU_BUILD_ID = 3
MAX_NOTES_BYTES = 1 << 16  # real note segments are a few hundred bytes


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

    def __init__(self, path: str, fd: Optional[int] = None):
        """Parse the file at path, or the descriptor fd (taken over: path only names it)."""
        self.path = path
        if fd is None:
            try:
                fd = os.open(path, READ_FLAGS)
            except OSError as exc:
                raise ElfError(f"cannot open {path}: {exc.strerror}") from None
        self._file, info = _adopt(fd, path)
        size = info.st_size
        self.identity = (info.st_dev, info.st_ino)
        self.version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)  # the cache key
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
    def reopen_path(self) -> str:
        """A path that names this very file while it is open (never resolved again)."""
        return f"/proc/self/fd/{self._file.fileno()}"

    @property
    def function_count(self) -> int:
        return len(self._functions)

    def lookup(self, vaddr: int) -> Optional[Tuple[str, int]]:
        """(name, offset into it) of the function holding `vaddr`, or None."""
        return self._functions.lookup(vaddr, self._segment_end(vaddr))

    def find_function(self, name: str) -> Optional[Tuple[int, int]]:
        """(vaddr, size) of a defined function symbol named `name`."""
        return self._functions.find(name)

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


def _adopt(fd: int, path: str):
    """A stream over fd (closed on failure) and its stat, if it is a plausible binary."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ElfError(f"{path} is not a regular file")
    if info.st_size > MAX_FILE_SIZE:
        os.close(fd)
        raise ElfError(f"{path} is too large to be a binary ({info.st_size} bytes)")
    return os.fdopen(fd, "rb"), info


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
    """ElfSymbols for `path` (a host path leaktrace trusts), parsed once per distinct
    file per run. Failures are cached too, so a broken file costs one attempt."""
    try:
        # O_NONBLOCK (READ_FLAGS): a FIFO planted where a binary should be must not hang.
        fd = os.open(path, READ_FLAGS)
    except OSError as exc:
        raise ElfError(f"cannot open {path}: {exc.strerror}") from None
    return open_elf_fd(fd, path)


def open_elf_in_root(root: str, path: str) -> ElfSymbols:
    """ElfSymbols for `path` as a process whose root is `root` sees it; never leaves root."""
    name = root.rstrip("/") + path if path.startswith("/") else f"{root}/{path}"
    try:
        fd = open_in_root(root, path)
    except PathResolveError as exc:
        raise ElfError(exc.message, exc.hint) from None
    except OSError as exc:
        raise ElfError(f"cannot open {name}: {exc.strerror}") from None
    return open_elf_fd(fd, name)


def open_elf_fd(fd: int, name: str) -> ElfSymbols:
    """ElfSymbols for the open descriptor fd (taken over), named `name` in messages."""
    info = os.fstat(fd)
    key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)  # ElfSymbols.version
    cached = _cache.get(key)
    if cached is None:
        try:
            cached = ElfSymbols(name, fd)
        except ElfError as exc:
            cached = exc
        _cache[key] = cached
    else:
        os.close(fd)
    if isinstance(cached, ElfError):
        raise ElfError(cached.message, cached.hint)
    return cached


def read_build_id_note(fd: int) -> Optional[str]:
    """The GNU build-id from the PT_NOTE segments alone, or None: a few small
    bounded reads, so a file can be checked before it is parsed."""
    try:
        header = os.pread(fd, 64, 0)
        if len(header) < 52 or header[:4] != b"\x7fELF" or header[4] not in (1, 2) \
                or header[5] not in (1, 2):
            return None
        wide, endian = header[4] == 2, "<" if header[5] == 1 else ">"
        if wide:
            phoff, = struct.unpack_from(endian + "Q", header, 32)
            entsize, count = struct.unpack_from(endian + "HH", header, 54)
            layout = endian + "IIQQQQ"  # type, flags, offset, vaddr, paddr, filesz
        else:
            phoff, = struct.unpack_from(endian + "I", header, 28)
            entsize, count = struct.unpack_from(endian + "HH", header, 42)
            layout = endian + "IIIIII"  # type, offset, vaddr, paddr, filesz, memsz
        if count > MAX_SEGMENTS or entsize < struct.calcsize(layout):
            return None
        table = os.pread(fd, entsize * count, phoff)
        for index in range(len(table) // entsize):
            fields = struct.unpack_from(layout, table, index * entsize)
            if fields[0] != PT_NOTE:
                continue
            offset, size = (fields[2], fields[5]) if wide else (fields[1], fields[4])
            found = _build_id_in(os.pread(fd, min(size, MAX_NOTES_BYTES), offset), endian)
            if found:
                return found
    except (OSError, struct.error):
        return None
    return None


def _build_id_in(notes: bytes, endian: str) -> Optional[str]:
    at = 0
    while at + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from(endian + "III", notes, at)
        name_at = at + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        if desc_at + descsz > len(notes):
            return None
        if kind == NT_GNU_BUILD_ID and notes[name_at:name_at + namesz] == b"GNU\0" and descsz:
            return notes[desc_at:desc_at + descsz].hex()
        at = desc_at + ((descsz + 3) & ~3)
    return None


def clear_cache() -> None:
    """Forget every parsed file (tests; a long-running daemon between runs)."""
    for value in _cache.values():
        if isinstance(value, ElfSymbols):
            value.close()
    _cache.clear()
