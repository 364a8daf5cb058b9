"""Kernel symbolization from kallsyms text: captured lines, and the live file."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from leaktrace.base.model import RawStack
from leaktrace.symbols.kallsyms import KernelSymbols, parse_kallsyms, variable_address

DATA = Path(__file__).resolve().parent.parent / "data" / "kallsyms"


@pytest.fixture(scope="module")
def symbols():
    return KernelSymbols(text=(DATA / "sample.txt").read_text())


def test_address_inside_a_function(symbols):
    frame = symbols.frame(0xffffffff816c81d0 + 0x5b)
    assert frame.label() == "create_pipe_files+0x5b [kernel]"
    assert frame.unwind == "kernel"


def test_function_start_has_offset_zero(symbols):
    assert symbols.lookup(0xffffffff816c8430) == ("do_pipe2", 0, "kernel")


def test_module_symbols_name_their_module(symbols):
    assert symbols.lookup(0xffffffffc0203010) == ("ftrace_trampoline", 0x10, "__builtin__ftrace")


def test_data_symbols_are_not_functions():
    addresses, names = parse_kallsyms((DATA / "sample.txt").read_text())
    assert "__start_rodata" not in [name for name, _ in names]
    assert ("alloc_pipe_info", "kernel") in names
    assert addresses == sorted(addresses)


def test_below_the_first_symbol_and_far_past_the_last_are_unknown(symbols):
    assert symbols.lookup(0x1000) is None
    assert symbols.lookup(0xffffffffc0203000 + (1 << 21)) is None
    assert symbols.frame(0x1000).symbol is None
    assert symbols.frame(0x1000).label() == "[unknown] 0x1000 [kernel]"


def test_stack_symbolized_in_order(symbols):
    frames = symbols.symbolize(RawStack((0xffffffff816c7a80, 0xffffffff816c8470, 0xffffffff816c8608)))
    assert [f.symbol for f in frames] == ["alloc_pipe_info", "do_pipe2", "__x64_sys_pipe2"]


def test_hidden_addresses_are_detected():
    hidden = KernelSymbols(text=(DATA / "hidden.txt").read_text())
    assert hidden.hidden
    assert hidden.lookup(0xffffffff816c81d0) is None


def test_missing_file_means_hidden(tmp_path):
    assert KernelSymbols(path=str(tmp_path / "none")).hidden


def test_live_kallsyms_resolves_a_known_function():
    live = KernelSymbols()
    if live.hidden:
        pytest.skip("kallsyms addresses hidden for this user (kptr_restrict)")
    address = next(int(line.split()[0], 16) for line in open("/proc/kallsyms")
                   if line.split()[2:3] == ["do_pipe2"])
    assert live.lookup(address + 4)[:2] == ("do_pipe2", 4)


def test_variable_addresses_and_hidden_ones(tmp_path):
    listed = tmp_path / "kallsyms"
    listed.write_text("ffffffff82a1c0c8 D page_offset_base\nffffffff816c7a70 T alloc_pipe_info\n"
                      "ffffffff82a1c0b8 D vmemmap_base\n")
    assert variable_address("vmemmap_base", str(listed)) == 0xFFFFFFFF82A1C0B8
    assert variable_address("alloc_pipe_info", str(listed)) is None  # a function, not a variable
    assert variable_address("nope", str(listed)) is None
    listed.write_text("0000000000000000 D page_offset_base\n")  # kptr_restrict
    assert variable_address("page_offset_base", str(listed)) is None
