"""The Python side and the BPF C side agree on what they share.

bcc gives Python the maps' structs, but not the C enums, #defines and handler
signatures: those are mirrored in Python (counter names by slot, kinds by
index, the unwind row layout) or generated from the allocator table
(probes/alloc_functions.py -> FN_* flags). These tests read bpf/ as text, so
a counter added on one side only, a handler missing for a table row, or an
entry handler reading more argument registers than probe placement keeps
intact fails here, without root.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Dict, List

import pytest

from leaktrace.base.model import KERNEL_KINDS, USER_KINDS
from leaktrace.probes import alloc_functions, kernel, unwinder, user
from leaktrace.unwind import tables

BPF = Path(__file__).resolve().parents[2] / "bpf"


def source(name: str) -> str:
    """A BPF file without its comments."""
    text = (BPF / name).read_text()
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", text, flags=re.S))


def enum_members(name: str, enum: str) -> List[str]:
    """Members of `enum <enum>` in order; each must follow the previous (no gaps)."""
    body = re.search(rf"enum {enum} \{{(.*?)\}};", source(name), re.S)
    assert body, f"enum {enum} not found in bpf/{name}"
    members, expected = [], 0
    for entry in filter(None, (e.strip() for e in body.group(1).split(","))):
        member, _, value = (part.strip() for part in entry.partition("="))
        if value:
            expected = int(value, 0)
        assert expected == len(members), f"enum {enum}: {member} is not slot {len(members)}"
        members.append(member)
        expected += 1
    return members


def define(name: str, macro: str) -> int:
    match = re.search(rf"^#define {macro} \(?(-?\w+)\)?", source(name), re.M)
    assert match, f"#define {macro} not found in bpf/{name}"
    return int(match.group(1), 0)


def handler_parameters(name: str) -> Dict[str, int]:
    """Probe functions of a BPF file -> how many arguments they take after ctx."""
    found = {}
    for function, params in re.findall(r"^int (\w+)\(struct pt_regs \*ctx([^)]*)\)", source(name), re.M):
        found[function] = params.count(",")
    return found


def lower_without(prefix: str, members: List[str], last: str) -> List[str]:
    assert members[-1] == last, f"the enum must end with {last}"
    return [m[len(prefix):].lower() for m in members[:-1]]


@pytest.mark.parametrize("header, enum, prefix, last, python", [
    ("common.h", "counter", "C_", "N_COUNTERS", user.COUNTERS),
    ("kernel_common.h", "kcounter", "K_", "N_KCOUNTERS", kernel.COUNTERS),
    ("unwind.h", "unwind_counter", "U_", "N_UNWIND_COUNTERS", unwinder.COUNTERS),
])
def test_counter_names_match_the_c_enum_slot_by_slot(header, enum, prefix, last, python):
    assert lower_without(prefix, enum_members(header, enum), last) == list(python)


def test_kinds_match_the_c_enums_index_by_index():
    assert [m[len("KIND_"):].lower() for m in enum_members("common.h", "alloc_kind")] == list(USER_KINDS)
    assert [m[len("KIND_"):].lower() for m in enum_members("kernel_common.h", "kernel_kind")] == list(KERNEL_KINDS)


def test_shared_constants_match():
    assert define("common.h", "WEIGHT_SHIFT") == user.WEIGHT_SHIFT
    assert define("unwind.h", "UNWIND_MAX_MAPPINGS") == unwinder.MAX_MAPPINGS
    assert define("unwind.h", "UNWIND_MAX_DEPTH") == unwinder.MAX_DEPTH
    assert define("unwind.h", "UNWIND_ID_BIT") == unwinder.ID_BIT


C_SIZES = {"u8": 1, "s8": 1, "u16": 2, "s16": 2, "u32": 4, "s32": 4, "u64": 8, "s64": 8}


def test_unwind_row_layout_matches_the_packed_rows():
    body = re.search(r"struct unwind_row \{(.*?)\};", source("unwind.h"), re.S).group(1)
    c_fields = [C_SIZES[line.split()[0]] for line in body.split(";") if line.strip()]
    python_fields = [struct.calcsize("<" + code) for code in tables.ROW.format.lstrip("<")]
    assert c_fields == python_fields
    assert sum(c_fields) == tables.ROW.size


def test_every_function_the_c_side_numbers_comes_from_the_table():
    used = set(re.findall(r"\bFN_[A-Z_]+\b", source("user_alloc.c") + source("common.h")))
    assert used, "user_alloc.c uses no FN_ number: the test checks nothing"
    assert used <= set(alloc_functions.defines()), used - set(alloc_functions.defines())
    assert not re.search(r"enum alloc_fn|#define FN_", source("common.h") + source("user_alloc.c")), \
        "function numbers are defined in C again: the table passes them as -D flags"


def test_every_table_row_has_its_handlers_reading_its_registers():
    handlers = handler_parameters("user_alloc.c")
    for function in alloc_functions.FUNCTIONS:
        assert function.entry_handler in handlers, f"{function.name}: no {function.entry_handler} in user_alloc.c"
        # Placement keeps exactly these registers intact up to the moved probe.
        assert handlers[function.entry_handler] == len(function.registers), function.name
        if function.has_return:
            assert handlers.get(function.exit_handler) == 0, f"{function.name}: no {function.exit_handler}()"
        else:
            assert f"{function.name}_exit" not in handlers, f"{function.name} returns nothing to probe"


def test_every_probe_handler_in_c_belongs_to_a_table_row():
    named = {h for pair in alloc_functions.HANDLERS.values() for h in pair if h}
    probes = {h for h in handler_parameters("user_alloc.c") if h.endswith(("_enter", "_exit"))}
    assert probes == named


def test_function_numbers_are_dense_with_the_allocators_own_first():
    defines = alloc_functions.defines()
    numbers = alloc_functions.NUMBERS
    assert sorted(numbers.values()) == list(range(1, defines["FN_LAST"] + 1))
    heap = {n for name, n in numbers.items() if alloc_functions.BY_NAME[name].family == "heap"}
    assert heap == set(range(1, defines["FN_LAST_HEAP"] + 1))
    # One bit per function in a u32 (thread_calls.active).
    assert defines["FN_LAST"] < 32
