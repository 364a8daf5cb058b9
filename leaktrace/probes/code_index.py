"""What probe placement needs from one x86-64 ELF file, read once per file version.

CodeIndex answers three questions: where a function is and how long it is,
what its bytes are, and which addresses in a window are reached from outside a
given function (other symbols, and direct branches from anywhere in the file).
The branch search over-approximates: rel32 call/jmp/jcc opcodes are matched at
every byte of the executable sections (glibc: ~50k matches, each hitting a given
byte with chance 2^-32), rel8 ones are decoded from the nearest symbol. An extra
entry only ever keeps a probe at the function's start: errors are on the safe side.
"""
from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import capstone
from capstone import x86 as cs_x86
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

_REL32 = re.compile(rb"[\xe8\xe9]|\x0f[\x80-\x8f]", re.DOTALL)
_REL8 = re.compile(rb"[\xeb\x70-\x7f]", re.DOTALL)
_SHF_EXECINSTR = 0x4
_CODE_SYMBOLS = ("STT_FUNC", "STT_GNU_IFUNC", "STT_NOTYPE")
_MAX_DECODE = 1 << 16  # how far back a symbol may be to decode rel8 branches from it
BRANCH_GROUPS = frozenset({capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL})


def decoder() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


def direct_target(insn) -> Optional[int]:
    """Where a direct jmp/jcc/call goes; None for anything else."""
    if BRANCH_GROUPS & set(insn.groups) and insn.operands \
            and insn.operands[0].type == cs_x86.X86_OP_IMM:
        return insn.operands[0].imm
    return None


def _scan(pattern, width: int, data: bytes, base: int) -> Iterator[Tuple[int, int]]:
    """(target, source) for every match of a branch opcode and its displacement."""
    for match in pattern.finditer(data):
        end = match.end() + width
        if end <= len(data):
            rel = int.from_bytes(data[match.end():end], "little", signed=True)
            yield base + end + rel, base + match.start()


@dataclass(frozen=True)
class CodeIndex:
    machine: str  # e_machine, e.g. EM_X86_64
    functions: Dict[str, Tuple[int, int, str]]  # name -> (vaddr, size, symbol type)
    symbol_addrs: List[int]  # sorted addresses of every defined code symbol
    code: List[Tuple[int, int, int]]  # executable sections: (vaddr, file offset, size)
    targets: List[int]  # rel32 branch targets, sorted
    sources: List[int]  # the branch to targets[i] is at sources[i]

    def read(self, stream, vaddr: int, size: int) -> bytes:
        for start, offset, length in self.code:
            if start <= vaddr and vaddr + size <= start + length:
                stream.seek(offset + vaddr - start)
                return stream.read(size)
        raise ELFError(f"no executable section holds {size} bytes at {vaddr:#x}")

    def entries_into(self, stream, window: Tuple[int, int], own: Tuple[int, int]) -> set:
        """Addresses in [window) reached from outside [own) (the function itself)."""
        lo, hi = window
        found = {(t, None) for t in self.symbol_addrs[bisect.bisect_left(self.symbol_addrs, lo):
                                                      bisect.bisect_left(self.symbol_addrs, hi)]}
        first, last = bisect.bisect_left(self.targets, lo), bisect.bisect_left(self.targets, hi)
        found.update(zip(self.targets[first:last], self.sources[first:last]))
        for start, _, length in self.code:  # a rel8 branch reaches 128 bytes at most
            near_lo, near_hi = max(lo - 130, start), min(hi + 128, start + length)
            if near_lo < near_hi:
                found.update(self._near_branches(stream, near_lo, near_hi))
        return {t for t, src in found
                if lo <= t < hi and (src is None or not own[0] <= src < own[1])}

    def _near_branches(self, stream, lo: int, hi: int) -> Iterator[Tuple[int, int]]:
        """Branches in [lo, hi), decoded from the nearest symbol before lo so that
        instruction boundaries are real; whatever does not decode is scanned."""
        i = bisect.bisect_right(self.symbol_addrs, lo) - 1
        origin = self.symbol_addrs[i] if i >= 0 and lo - self.symbol_addrs[i] < _MAX_DECODE else lo
        reached = origin
        if origin < lo:
            for insn in decoder().disasm(self.read(stream, origin, hi - origin), origin):
                reached = insn.address + insn.size
                target = direct_target(insn)
                if target is not None and insn.address >= lo:
                    yield target, insn.address
        if reached < hi:
            yield from _scan(_REL8, 1, self.read(stream, reached, hi - reached), reached)


def _named_symbol(elf: ELFFile, name: str):
    """The first defined code symbol called name, .symtab before .dynsym, as
    _build_index keeps it; the dynamic one through the GNU hash table when there is one."""
    tables = [elf.get_section_by_name(".symtab")]
    hashed = elf.get_section_by_name(".gnu.hash")
    tables.append(hashed if hashed is not None else elf.get_section_by_name(".dynsym"))
    for table in tables:
        if table is None:
            continue
        found = [table.get_symbol(name)] if table is hashed else table.get_symbol_by_name(name)
        for symbol in found or ():
            if symbol is not None and symbol["st_shndx"] != "SHN_UNDEF" \
                    and symbol["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC"):
                return symbol
    return None


class _OpenElf:
    """One file version kept open, its executable sections listed once: a warm
    attach confirms a dozen cached placements in the same libc, and pyelftools
    re-parses every section header on each fresh ELFFile (~0.1 s apiece)."""

    def __init__(self, path: str):
        self.stream = open(path, "rb")
        try:
            self.elf = ELFFile(self.stream)
            self.code = [(s["sh_addr"], s["sh_offset"], s["sh_size"]) for s in self.elf.iter_sections()
                         if s["sh_flags"] & _SHF_EXECINSTR and s["sh_type"] != "SHT_NOBITS"]
        except BaseException:
            self.stream.close()
            raise

    def read(self, vaddr: int, size: int) -> Optional[bytes]:
        for start, offset, length in self.code:
            if start <= vaddr and vaddr + size <= start + length:
                self.stream.seek(offset + vaddr - start)
                return self.stream.read(size)
        return None


class PerFileVersion:
    """What was built from one file, kept per version (st_dev, st_ino, st_size,
    st_mtime_ns), so every path that reaches it (/proc/PID/root/...) shares it;
    the oldest goes first when `limit` are kept (on_drop: what to release)."""

    def __init__(self, build: Callable[[str], object], limit: int, on_drop: Callable = lambda built: None):
        self.build, self.limit, self.on_drop = build, limit, on_drop
        self.kept: Dict[Tuple[int, int, int, int], object] = {}

    def get(self, path: str):
        info = os.stat(path)
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        found = self.kept.get(key)
        if found is None:
            found = self.build(path)
            if len(self.kept) >= self.limit:
                self.on_drop(self.kept.pop(next(iter(self.kept))))
            self.kept[key] = found
        return found


_open_elves = PerFileVersion(_OpenElf, limit=4, on_drop=lambda opened: opened.stream.close())


def function_code(path: str, name: str) -> Optional[Tuple[int, bytes]]:
    """(vaddr, bytes) of the plain function `name` as index_elf finds it,
    without indexing the file's branches; None if it is not a sized STT_FUNC
    in an executable section. Raises OSError or ELFError."""
    opened = _open_elves.get(path)
    symbol = _named_symbol(opened.elf, name)
    if symbol is None or symbol["st_info"]["type"] != "STT_FUNC" or symbol["st_size"] == 0:
        return None
    code = opened.read(symbol["st_value"], symbol["st_size"])
    return None if code is None else (symbol["st_value"], code)


def index_elf(path: str) -> CodeIndex:
    """The CodeIndex of the file at path, built once per file version.
    Raises OSError or ELFError."""
    return _indexes.get(path)


def _build_index(path: str) -> CodeIndex:
    with open(path, "rb") as stream:
        elf = ELFFile(stream)
        functions, addrs, code, pairs = {}, set(), [], []
        for section in elf.iter_sections():
            if section["sh_flags"] & _SHF_EXECINSTR and section["sh_type"] != "SHT_NOBITS":
                code.append((section["sh_addr"], section["sh_offset"], section["sh_size"]))
                pairs.extend(_scan(_REL32, 4, section.data(), section["sh_addr"]))
        for name in (".symtab", ".dynsym"):
            table = elf.get_section_by_name(name)
            for sym in table.iter_symbols() if table is not None else ():
                kind = sym["st_info"]["type"]
                if sym["st_shndx"] == "SHN_UNDEF" or kind not in _CODE_SYMBOLS:
                    continue
                addrs.add(sym["st_value"])
                if kind != "STT_NOTYPE":
                    functions.setdefault(sym.name, (sym["st_value"], sym["st_size"], kind))
        pairs.sort()
        return CodeIndex(elf["e_machine"], functions, sorted(addrs), code,
                         [t for t, _ in pairs], [s for _, s in pairs])


# Indexes of big libraries are MBs: 16 file versions at most.
_indexes = PerFileVersion(_build_index, limit=16)
