"""A DWARF call-frame-information interpreter for x86-64, reduced to what a
BPF stack walker needs.

Contract: rules_of(entry) runs one FDE's CIE and FDE instructions (as
pyelftools parses them from .eh_frame or .debug_frame) and returns the rules
in force from each address on: how to find the CFA, where the caller's rbp
is, where the return address is. encode() turns one rule into the compact
row the BPF side reads (bpf/unwind.h: struct unwind_row). Rules the walker
cannot follow (DWARF expressions, a CFA in another register) encode as
ROW_NONE, so the walker falls back to the frame-pointer rule there instead
of guessing. Malformed CFI raises CfiError.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

from elftools.dwarf import constants as dw

RBP, RSP, RA = 6, 7, 16  # DWARF register numbers on x86-64

# struct unwind_row.kind (bpf/unwind.h)
ROW_NONE = 0  # no usable rule: frame-pointer fallback
ROW_CFA_RSP = 1  # CFA = rsp + cfa_off
ROW_CFA_RBP = 2  # CFA = rbp + cfa_off
ROW_END = 3  # return address undefined: the outermost frame
ROW_SIGNAL = 4  # sigreturn trampoline: registers come from the ucontext
RBP_SAME = 0  # rbp_slot: rbp unchanged in this frame
RBP_LOST = -128  # rbp_slot: rbp cannot be recovered
S16 = (-(1 << 15), (1 << 15) - 1)

ADVANCES = (dw.DW_CFA_advance_loc, dw.DW_CFA_advance_loc1, dw.DW_CFA_advance_loc2,
            dw.DW_CFA_advance_loc4)
OFFSETS = (dw.DW_CFA_offset, dw.DW_CFA_offset_extended, dw.DW_CFA_offset_extended_sf)
IGNORED = (dw.DW_CFA_nop, dw.DW_CFA_GNU_args_size)


class CfiError(Exception):
    """The CFI instructions make no sense (truncated, restore_state underflow...)."""


class Rule(NamedTuple):
    """How to recover a register: ("same"|"undefined"|"offset"|"other", CFA offset)."""

    kind: str
    offset: int = 0


SAME = Rule("same")


class State(NamedTuple):
    """The unwind rules in force at one address."""

    cfa_reg: Optional[int]  # None: the CFA is a DWARF expression
    cfa_off: int
    rbp: Rule
    ra: Rule


def _register_rule(opcode: int, args, data_factor: int) -> Rule:
    if opcode in OFFSETS:
        return Rule("offset", args[1] * data_factor)
    if opcode == dw.DW_CFA_same_value:
        return SAME
    if opcode == dw.DW_CFA_undefined:
        return Rule("undefined")
    return Rule("other")  # register, expression, val_*: not followed in BPF


def _step(state: State, opcode: int, args, cie, initial: Optional[State], saved: list) -> State:
    """Apply one non-advancing instruction."""
    data_factor = cie["data_alignment_factor"]
    if opcode == dw.DW_CFA_def_cfa:
        return state._replace(cfa_reg=args[0], cfa_off=args[1])
    if opcode == dw.DW_CFA_def_cfa_sf:
        return state._replace(cfa_reg=args[0], cfa_off=args[1] * data_factor)
    if opcode == dw.DW_CFA_def_cfa_register:
        return state._replace(cfa_reg=args[0])
    if opcode == dw.DW_CFA_def_cfa_offset:
        return state._replace(cfa_off=args[0])
    if opcode == dw.DW_CFA_def_cfa_offset_sf:
        return state._replace(cfa_off=args[0] * data_factor)
    if opcode == dw.DW_CFA_def_cfa_expression:
        return state._replace(cfa_reg=None, cfa_off=0)
    if opcode == dw.DW_CFA_remember_state:
        saved.append(state)
        return state
    if opcode == dw.DW_CFA_restore_state:
        if not saved:
            raise CfiError("DW_CFA_restore_state without a remembered state")
        return saved.pop()
    if opcode in (dw.DW_CFA_restore, dw.DW_CFA_restore_extended):
        if initial is None:
            raise CfiError("DW_CFA_restore inside a CIE")
        rule = {RBP: initial.rbp, RA: initial.ra}.get(args[0])
        return _set_register(state, args[0], rule) if rule else state
    if opcode in IGNORED:
        return state
    return _set_register(state, args[0], _register_rule(opcode, args, data_factor))


def _set_register(state: State, register: int, rule: Rule) -> State:
    if register == RBP:
        return state._replace(rbp=rule)
    if register == RA:
        return state._replace(ra=rule)
    return state


def _run(instructions, cie, start: State, initial: Optional[State], pc: int) -> List[Tuple[int, State]]:
    rows: List[Tuple[int, State]] = []
    state, saved = start, []
    for instruction in instructions:
        opcode, args = instruction.opcode, instruction.args
        if opcode in ADVANCES or opcode == dw.DW_CFA_set_loc:
            rows.append((pc, state))
            pc = args[0] if opcode == dw.DW_CFA_set_loc else pc + args[0] * cie["code_alignment_factor"]
        else:
            state = _step(state, opcode, args, cie, initial, saved)
    rows.append((pc, state))
    return rows


def initial_state(cie) -> State:
    """The rules a CIE's initial instructions set up (x86-64: CFA=rsp+8, ra at CFA-8)."""
    blank = State(None, 0, SAME, Rule("undefined"))
    try:
        return _run(cie.instructions, cie, blank, None, 0)[-1][1]
    except (IndexError, TypeError) as exc:
        raise CfiError(f"malformed CIE: {exc}") from None


def rules_of(fde) -> List[Tuple[int, State]]:
    """(address, rules) for one FDE, in address order; the last applies up to its end."""
    cie = fde.cie
    initial = initial_state(cie)
    try:
        rows = _run(fde.instructions, cie, initial, initial, fde["initial_location"])
    except (IndexError, TypeError) as exc:
        raise CfiError(f"malformed FDE at 0x{fde['initial_location']:x}: {exc}") from None
    end = fde["initial_location"] + fde["address_range"]
    # An advance to the FDE's end (or past it) adds a row that covers nothing.
    kept = [row for row in rows if row[0] < end]
    deduplicated = []
    for pc, state in kept:
        if deduplicated and deduplicated[-1][0] == pc:
            deduplicated[-1] = (pc, state)  # two advances by 0: the later rules win
        else:
            deduplicated.append((pc, state))
    return deduplicated


def is_signal_frame(fde) -> bool:
    """glibc marks its sigreturn trampoline with the 'S' augmentation."""
    return b"S" in (fde.cie["augmentation"] or b"")


def encode(state: State, signal: bool = False) -> Tuple[int, int, int]:
    """(kind, cfa_off, rbp_slot) of struct unwind_row for these rules."""
    if signal:
        return ROW_SIGNAL, 0, RBP_SAME
    if state.ra.kind == "undefined":
        return ROW_END, 0, RBP_SAME
    if state.ra != Rule("offset", -8) or state.cfa_reg not in (RSP, RBP):
        return ROW_NONE, 0, RBP_SAME
    if not S16[0] <= state.cfa_off <= S16[1]:
        return ROW_NONE, 0, RBP_SAME
    kind = ROW_CFA_RSP if state.cfa_reg == RSP else ROW_CFA_RBP
    return kind, state.cfa_off, _rbp_slot(state.rbp)


def _rbp_slot(rule: Rule) -> int:
    if rule.kind == "same":
        return RBP_SAME
    if rule.kind == "offset" and rule.offset % 8 == 0 and -127 <= rule.offset // 8 <= 127 and rule.offset:
        return rule.offset // 8
    return RBP_LOST
