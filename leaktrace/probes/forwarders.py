"""Entry points that only jump to another one: probed both, one call is seen twice.

jemalloc's `operator delete(void*)` is `jmp free@plt` and its `operator new[]`
is `jmp operator new`; mimalloc's nothrow new is `jmp mi_new_nothrow@plt`.
A free seen at both would count the second as a free of an unknown block, and
a tail jump between two names of one row looks like a call whose return was
missed. So an entry point whose first instruction (after endbr64) jumps,
directly or through its PLT slot, to another hooked entry point of the same
object is not probed: the one it jumps to sees every call.

jump_target() reads the file; drop_forwarders() is the rule.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, TypeVar

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from .code_index import decoder, direct_target, function_code

_PLT_SECTIONS = (".plt.sec", ".plt", ".plt.got")
_FIRST_BYTES = 16  # endbr64 (4) + jmp rel32 (5) fit
H = TypeVar("H")


def _slot_symbols(elf: ELFFile) -> Dict[int, str]:
    """GOT slot address -> the symbol its relocation names (JUMP_SLOT, GLOB_DAT)."""
    slots: Dict[int, str] = {}
    for section in elf.iter_sections():
        if not isinstance(section, RelocationSection) or section["sh_link"] == 0:
            continue
        symbols = elf.get_section(section["sh_link"])
        for relocation in section.iter_relocations():
            if relocation["r_info_sym"]:
                slots[relocation["r_offset"]] = symbols.get_symbol(relocation["r_info_sym"]).name
    return slots


def _plt_target(elf: ELFFile, stream, address: int) -> Optional[str]:
    """The symbol a PLT stub at address jumps to through its GOT slot."""
    for name in _PLT_SECTIONS:
        section = elf.get_section_by_name(name)
        if section is None or not section["sh_addr"] <= address < section["sh_addr"] + section["sh_size"]:
            continue
        stream.seek(section["sh_offset"] + address - section["sh_addr"])
        for insn in decoder().disasm(stream.read(_FIRST_BYTES), address):
            if insn.mnemonic == "endbr64":
                continue
            slot = _rip_slot(insn)
            return _slot_symbols(elf).get(slot) if slot is not None else None
    return None


def _rip_slot(insn) -> Optional[int]:
    """The address `jmp qword ptr [rip + disp]` reads its target from."""
    if insn.mnemonic != "jmp" or len(insn.operands) != 1:
        return None
    operand = insn.operands[0]
    if operand.type != 3 or insn.reg_name(operand.mem.base) != "rip":  # 3: CS_OP_MEM
        return None
    return insn.address + insn.size + operand.mem.disp


def jump_target(path: str, symbol: str, name_at: Callable[[int], Optional[str]]) -> Optional[str]:
    """The symbol that `symbol`'s code jumps to first thing, or None when it
    does anything else. name_at(address) names a function starting there."""
    try:
        found = function_code(path, symbol)
        if found is None:
            return None
        vaddr, code = found
        for insn in decoder().disasm(code[:_FIRST_BYTES], vaddr):
            if insn.mnemonic == "endbr64":
                continue
            target = direct_target(insn) if insn.mnemonic == "jmp" else None
            if target is None:
                return None
            with open(path, "rb") as stream:
                return name_at(target) or _plt_target(ELFFile(stream), stream, target)
    except (OSError, ELFError):
        return None
    return None


def drop_forwarders(hooks: Sequence[H], symbol_of: Callable[[H], str],
                    address_of: Callable[[str], Optional[int]],
                    target_of: Callable[[str], Optional[str]]) -> List[H]:
    """hooks (of one object) without those that only jump to another of them.

    address_of(symbol) says where a symbol starts (None: unknown), target_of(symbol)
    what it jumps to first thing (jump_target). Aliases of a hooked symbol count as it.
    """
    hooked = {address_of(symbol_of(hook)) for hook in hooks} - {None}
    kept = []
    for hook in hooks:
        target = target_of(symbol_of(hook))
        address = address_of(target) if target else None
        if address is not None and address in hooked and address != address_of(symbol_of(hook)):
            continue
        kept.append(hook)
    return kept
