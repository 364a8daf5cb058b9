"""Where to put a function's entry uprobe so the kernel emulates it.

A uprobe replaces one instruction with int3. On a hit the kernel either
emulates the original instruction (~1 us here) or single-steps a copy of it out
of line (two more traps; ~20 us under virtualization). glibc's free starts with
`test rdi, rdi`, which is single-stepped; the `je` right after it is emulated.
So the entry probe may move a few bytes in, but only where that is provably the
same probe:

  (a) every skipped instruction is straight-line: no branch, call, return,
      trap or atomic, and no memory write. Reads are fine: a skipped read
      differs only by faulting, and then the call dies before doing any work;
  (b) none writes a register the probe reads (the given argument registers),
      nor rsp or rbp: the probe's stack capture starts from ip, sp and bp. An
      untouched rsp also means a uretprobe at the same offset still finds the
      return address at [rsp];
  (c) nothing reaches the skipped bytes or the chosen instruction except the
      entry: no direct branch in the function (decoded whole, size from the
      symbol), no indirect jump in it, no branch or symbol from elsewhere in
      the file (code_index), so the probe fires exactly once per call;
  (d) the chosen instruction is one this kernel emulates (EMULATED below),
      and not a nop5 on a kernel that optimises it (NOP5_OPTIMISED_SINCE).
Otherwise the entry is kept. choose_offset is pure (bytes in, Placement out);
place_probe reads the ELF file. The probe then reports ip = start + offset,
which symbolizes to the same function.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Collection, Dict, Optional, Sequence, Tuple

import capstone
from capstone import x86 as cs_x86
from elftools.common.exceptions import ELFError

from ..base.errors import TargetError, UsageError
from .code_index import BRANCH_GROUPS, decoder, direct_target, index_elf

# Look no further: prologues are short, and this bounds the foreign-entry window.
MAX_SKIP_BYTES = 64


@dataclass(frozen=True)
class Placement:
    offset: int  # bytes from the function's start where the entry probe goes
    reason: str  # one line: why here, or why the entry was kept


@dataclass(frozen=True)
class Emulation:
    since: Tuple[int, int]  # first mainline kernel that emulates it
    source: str  # where in arch/x86/kernel/uprobes.c, and the commit


# What arch_uprobe_analyze_insn() in arch/x86/kernel/uprobes.c handles without a
# single-step. Where a commit's release is uncertain the later one is given, so
# placement never counts on emulation a kernel lacks; older kernels keep the entry.
EMULATED: Dict[str, Emulation] = {
    "branch": Emulation((3, 16), "branch_xol_ops: jmp rel8/rel32, call rel32, jcc rel8/rel32 "
                                 "(7ba6db2d688b..6cc5e7ff2c38, Apr 2014); 0x66-prefixed "
                                 "ones are refused"),
    "nop": Emulation((3, 16), "branch_xol_ops: opcode 0x90 (nop, pause) as a jump to the next "
                              "instruction (d241006354c5)"),
    "push": Emulation((4, 16), "push_xol_ops: push %reg, and push %r8-%r15 with a lone 0x41 REX "
                               "(e7ed9d9bd037, Nov 2017: absent from 4.14, in 4.15 or 4.16)"),
    "nop2": Emulation((6, 2), "66 90: refused until 'Allow to probe a NOP instruction with "
                              "0x66 prefix' (Dec 2022)"),
    "nopl": Emulation((6, 16), "branch_xol_ops: bytes equal to x86_nops[len] (610f6e14c29d)"),
    "nop5": Emulation((6, 16), "as nopl; from 6.18 optimised into a trampoline call"),
}
# From 6.18 (5221e0a29ab4) a probed nop5 is rewritten into a call to a
# trampoline that enters through the uprobe syscall. That call writes its
# return address at rsp-8, inside the x86-64 red zone, where a leaf function may
# keep data; upstream fixed it in 2026 (jumps to slots that step over the red
# zone, and a 10-byte nop), in a release not confirmed here. So a probe is never
# moved onto a nop5 on a kernel that optimises it. (A nop5 at the entry itself
# is probed anyway: nothing lives below rsp before the function's first write.)
NOP5_OPTIMISED_SINCE = (6, 18)
# Not emulated as of 6.18: mov reg,reg and sub imm,rsp (an RFC of Nov 2025),
# endbr64, test, cmp, lea. Refused outright (is_prefix_bad): instructions with
# an es/cs/ss/ds or lock prefix, so `notrack jmp` and `cs nopw` cannot be probed.
_REFUSED_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0xF0})
_LEGACY_PREFIXES = _REFUSED_PREFIXES | {0x64, 0x65, 0x66, 0x67, 0xF2, 0xF3}
_X86_NOPS = {  # arch/x86/include/asm/nops.h, 64-bit, 3 to 8 bytes
    bytes.fromhex("0f1f00"): "nopl", bytes.fromhex("0f1f4000"): "nopl",
    bytes.fromhex("0f1f440000"): "nop5", bytes.fromhex("660f1f440000"): "nopl",
    bytes.fromhex("0f1f8000000000"): "nopl", bytes.fromhex("0f1f840000000000"): "nopl",
}

_PARTS = {
    "rax": ("eax", "ax", "al", "ah"), "rbx": ("ebx", "bx", "bl", "bh"),
    "rcx": ("ecx", "cx", "cl", "ch"), "rdx": ("edx", "dx", "dl", "dh"),
    "rsi": ("esi", "si", "sil"), "rdi": ("edi", "di", "dil"), "rbp": ("ebp", "bp", "bpl"),
    "rsp": ("esp", "sp", "spl"), "rip": ("eip", "ip"),
    **{f"r{n}": (f"r{n}d", f"r{n}w", f"r{n}b") for n in range(8, 16)},
}
_FULL_REGISTER = {name: full for full, parts in _PARTS.items() for name in (full, *parts)}
_ALWAYS_PROTECTED = frozenset({"rsp", "rbp", "rip"})
_STOP_GROUPS = BRANCH_GROUPS | {capstone.CS_GRP_RET, capstone.CS_GRP_INT, capstone.CS_GRP_IRET,
                                capstone.CS_GRP_PRIVILEGE, capstone.CS_GRP_BRANCH_RELATIVE}
_TRAPS = frozenset({"syscall", "sysenter", "ud0", "ud1", "ud2", "hlt", "int3", "into"})
_NO_EFFECT = frozenset({"nop", "endbr64", "endbr32", "pause"})


def kernel_version(release: Optional[str] = None) -> Tuple[int, int]:
    """(major, minor) of `release`, default the running kernel; (0, 0) if unreadable."""
    found = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def emulation_kind(raw: bytes) -> Optional[str]:
    """The EMULATED key for one instruction's bytes, or None if it is single-stepped."""
    pos = 0
    while pos < len(raw) and raw[pos] in _LEGACY_PREFIXES:
        pos += 1
    prefixes, rest = set(raw[:pos]), raw[pos:]
    if not rest or prefixes & _REFUSED_PREFIXES:
        return None
    if raw in _X86_NOPS:
        return _X86_NOPS[raw]
    rex = rest[0] if 0x40 <= rest[0] <= 0x4F else None
    op = rest[1:] if rex is not None else rest
    if not op:
        return None
    near_jcc = op[0] == 0x0F and len(op) > 1 and 0x80 <= op[1] <= 0x8F
    if op[0] in (0xE8, 0xE9, 0xEB) or 0x70 <= op[0] <= 0x7F or near_jcc:
        return None if 0x66 in prefixes else "branch"
    if op[0] == 0x90 and rex is None:
        return "nop2" if 0x66 in prefixes else "nop"
    if 0x50 <= op[0] <= 0x57 and not prefixes and rex in (None, 0x41) and len(raw) <= 2:
        return "push"
    return None


def usable_kinds(version: Tuple[int, int]) -> Tuple[str, ...]:
    """The EMULATED kinds placement may move a probe onto on this kernel."""
    return tuple(kind for kind, emulation in EMULATED.items() if version >= emulation.since
                 and not (kind == "nop5" and version >= NOP5_OPTIMISED_SINCE))


def describe_kernel(version: Tuple[int, int]) -> str:
    """One line for the report header: what placement counts on here."""
    kinds = usable_kinds(version)
    line = (f"entry probes moved onto instructions Linux {version[0]}.{version[1]} emulates "
            f"({', '.join(kinds)})" if kinds else "entry probes kept at function entries")
    if version >= NOP5_OPTIMISED_SINCE:
        line += "; never onto a nop5, which this kernel optimises into a call that writes the red zone"
    return line


def _cheap_kind(insn, version: Tuple[int, int]) -> Optional[str]:
    kind = emulation_kind(bytes(insn.bytes))
    return kind if kind in usable_kinds(version) else None


def _describe(kind: str) -> str:
    return f"{kind}, Linux {'.'.join(map(str, EMULATED[kind].since))}+"


def _text(insn) -> str:
    return f"{insn.mnemonic} {insn.op_str}".strip()


def _why_not_skippable(insn, protected: Collection[str]) -> Optional[str]:
    """Why the probe may not move past insn, or None if it may."""
    if insn.mnemonic in _NO_EFFECT:
        return None
    if _STOP_GROUPS & set(insn.groups) or insn.mnemonic in _TRAPS:
        return "changes control flow"
    if insn.prefix[0] == 0xF0:
        return "is atomic"
    if any(op.type == cs_x86.X86_OP_MEM and op.access & capstone.CS_AC_WRITE
           for op in insn.operands):
        return "writes memory"
    for reg in insn.regs_access()[1]:
        name = insn.reg_name(reg)
        full = _FULL_REGISTER.get(name)
        if full in protected:
            return f"writes {name}"
        if full is None and name != "rflags" and not name.startswith(("xmm", "ymm", "zmm")):
            return f"writes {name}"
    return None


def _protected_registers(arg_regs: Sequence[str]) -> frozenset:
    unknown = [r for r in arg_regs if r not in _PARTS or r == "rip"]
    if unknown or isinstance(arg_regs, str):
        raise UsageError(f"not a 64-bit argument register: {', '.join(unknown) or arg_regs}",
                         hint="name general-purpose registers in a tuple, e.g. ('rdi', 'rsi')")
    return _ALWAYS_PROTECTED | frozenset(arg_regs)


def _first_cheap(insns, protected, version) -> Tuple[Optional[object], str]:
    """(the first emulated instruction reachable by skipping, its kind), or (None, why not)."""
    for insn in insns:
        offset = insn.address - insns[0].address
        if offset >= MAX_SKIP_BYTES:
            break
        kind = _cheap_kind(insn, version) if offset else None
        if kind:
            return insn, kind
        why = _why_not_skippable(insn, protected)
        if why:
            return None, f"+{offset} `{_text(insn)}` {why}"
    return None, f"no emulated instruction in the first {MAX_SKIP_BYTES} bytes"


def _entry_into(insns, lo: int, hi: int, foreign_entries: Collection[int]) -> Optional[str]:
    """What, if anything, reaches [lo, hi) other than falling through from the entry."""
    start = insns[0].address
    for insn in insns:
        target = direct_target(insn)
        if target is not None and lo <= target < hi:
            return f"`{_text(insn)}` at +{insn.address - start} branches to +{target - start}"
        if target is None and capstone.CS_GRP_JUMP in insn.groups:
            op = insn.operands[0]
            # jmp *slot(%rip) is a tail call through the GOT: it enters a function's start.
            if not (op.type == cs_x86.X86_OP_MEM and insn.reg_name(op.mem.base) == "rip"):
                return f"indirect `{_text(insn)}` at +{insn.address - start} may jump anywhere"
    for target in sorted(foreign_entries):
        if lo <= target < hi:
            return f"+{target - start} is entered from outside the function"
    return None


def _skipped_text(skipped) -> str:
    texts = [_text(i) for i in skipped]
    if len(texts) > 3:
        return f"{len(texts)} instructions (`{texts[0]}` ... `{texts[-1]}`)"
    return f"`{'; '.join(texts)}`"


def choose_offset(code: bytes, func_vaddr: int, arg_regs: Tuple[str, ...],
                  kernel: Optional[Tuple[int, int]] = None,
                  foreign_entries: Collection[int] = ()) -> Placement:
    """Where the entry probe goes in the function whose whole body is `code`,
    loaded at func_vaddr, for a probe that reads the registers arg_regs.

    kernel is (major, minor), default the running kernel. foreign_entries are
    addresses reached from outside the function (place_probe finds them).
    """
    protected = _protected_registers(arg_regs)
    version = kernel if kernel is not None else kernel_version()
    entry = next(decoder().disasm(code, func_vaddr, 1), None)
    if entry is None:
        return Placement(0, "entry kept: the first instruction does not decode")
    kind = _cheap_kind(entry, version)
    if kind:
        return Placement(0, f"entry `{_text(entry)}` is emulated ({_describe(kind)})")
    insns = list(decoder().disasm(code, func_vaddr))
    decoded = insns[-1].address + insns[-1].size - func_vaddr
    if decoded != len(code):
        return Placement(0, f"entry kept: decoding stopped at +{decoded} of {len(code)} bytes")
    target, kind_or_why = _first_cheap(insns, protected, version)
    if target is None:
        return Placement(0, f"entry kept: {kind_or_why}")
    entered = _entry_into(insns, func_vaddr + 1, target.address + target.size, foreign_entries)
    if entered:
        return Placement(0, f"entry kept: {entered}")
    offset = target.address - func_vaddr
    skipped = _skipped_text(i for i in insns if i.address < target.address)
    return Placement(offset, f"moved past {skipped} to `{_text(target)}` at +{offset}, "
                             f"emulated ({_describe(kind_or_why)})")


def confirmed(offset: int, code: bytes, func_vaddr: int, arg_regs: Tuple[str, ...],
              kernel: Optional[Tuple[int, int]] = None) -> bool:
    """Whether a remembered offset (a cache's) is right for the function's bytes
    as they are now: 0, the entry itself, always is; any other offset must be
    the very one choose_offset finds in these bytes. Entries from elsewhere in
    the file, which it does not recheck, could only have kept the probe at 0."""
    return offset == 0 or choose_offset(code, func_vaddr, arg_regs, kernel).offset == offset


def place_probe(elf_path: str, func_name: str, arg_regs: Tuple[str, ...],
                kernel: Optional[Tuple[int, int]] = None) -> Placement:
    """choose_offset for the function func_name defined in the ELF file at
    elf_path, with the entries from elsewhere in that file."""
    try:
        index = index_elf(elf_path)
        if index.machine != "EM_X86_64":
            return Placement(0, f"entry kept: {index.machine} is not x86-64")
        if func_name not in index.functions:
            raise TargetError(f"{func_name} is not defined in {elf_path}",
                              hint="check the name with `nm -D` (or `nm`) on that file")
        vaddr, size, kind = index.functions[func_name]
        if kind != "STT_FUNC":
            return Placement(0, f"entry kept: {func_name} is {kind}, not a plain function")
        if size == 0:
            return Placement(0, f"entry kept: the size of {func_name} is unknown")
        with open(elf_path, "rb") as stream:
            code = index.read(stream, vaddr, size)
            window = (vaddr + 1, vaddr + MAX_SKIP_BYTES + 16)
            foreign = index.entries_into(stream, window, (vaddr, vaddr + size))
    except (OSError, ELFError) as exc:
        raise TargetError(f"cannot read {elf_path}: {exc}",
                          hint="give the path of an ELF executable or shared library") from None
    return choose_offset(code, vaddr, arg_regs, kernel, foreign)
