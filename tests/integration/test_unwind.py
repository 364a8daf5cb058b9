"""Complete stacks through code built without frame pointers (root + BPF).

The programs use the distribution's own libc and libstdc++, which Debian
builds without frame pointers; the probes walk the stack with .eh_frame
unwind tables (bpf/unwind.h). Every frame between the allocator and main is
asserted, in order, from leaktrace's final JSON report.
"""
from typing import Dict, List

import pytest

from harness import assert_within, describe_stacks, stack_with, trace_leaker
from leaktrace.unwind import tables

pytestmark = pytest.mark.privileged

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
NO_FRAME_POINTERS = ["-O2", "-fomit-frame-pointer"]


def symbols(stack: Dict) -> List[str]:
    return [frame.get("symbol") or "?" for frame in stack["frames"]]


def leak_stack(report: Dict, function: str, leaked: Dict) -> Dict:
    """The one stack holding function's leak, with the program's bytes and count."""
    stack = stack_with(report, function)
    assert stack is not None, f"no stack includes {function}\n" + describe_stacks(report)
    expected = leaked["sites"][function]
    assert_within(stack["bytes"], expected["bytes"], 10, f"{function} bytes\n" + describe_stacks(report))
    assert stack["count"] == expected["count"], describe_stacks(report)
    return stack


def assert_chain(stack: Dict, chain: List[str]) -> None:
    """chain appears as consecutive frames, innermost first."""
    names = symbols(stack)
    starts = [i for i, name in enumerate(names) if name.startswith(chain[0])]
    assert any(all(names[i + k].startswith(fn) for k, fn in enumerate(chain))
               for i in starts if i + len(chain) <= len(names)), f"{chain} not in {names}"


@pytest.fixture(scope="module")
def libcache_program(build):
    lib = build("libcache.c", ["-shared", "-fPIC"], name="libcache.so")
    return build("uses_libcache.c", [f"-L{lib.parent}", "-lcache", f"-Wl,-rpath,{lib.parent}"])


def test_strdup_leak_in_a_shared_library_shows_its_caller(libcache_program):
    leaked, reports, _ = trace_leaker([libcache_program])
    stack = leak_stack(reports[-1], "lib_cache_put", leaked)
    assert "strdup" in symbols(stack)[0], symbols(stack)
    assert_chain(stack, ["lib_cache_put", "store_names", "main"])
    lib_frame = next(f for f in stack["frames"] if f.get("symbol") == "lib_cache_put")
    assert lib_frame["module"].endswith("libcache.so") and lib_frame["unwind"] == "cfi", lib_frame


def test_frame_pointer_walk_loses_the_caller_that_cfi_recovers(libcache_program):
    if tables.read_table(LIBC).frame_pointers:
        pytest.skip("this libc keeps frame pointers: both walks see lib_cache_put")
    leaked, reports, _ = trace_leaker([libcache_program], ["--unwind", "fp"])
    stack = stack_with(reports[-1], "strdup")
    assert stack is not None, describe_stacks(reports[-1])
    assert "lib_cache_put" not in symbols(stack), symbols(stack)
    assert {frame["unwind"] for frame in stack["frames"]} == {"fp"}


def test_cpp_new_leak_shows_the_method_and_its_callers_up_to_main(build):
    leaked, reports, _ = trace_leaker([build("cache.cpp", cxx=True)])
    stack = leak_stack(reports[-1], "Cache::insert", leaked)
    names = symbols(stack)
    assert names[0].startswith("operator new"), names
    assert names[1] == "Cache::insert(std::string const&)", names
    assert names[2] == "main", names


def test_every_frame_of_an_application_built_without_frame_pointers(build):
    program = build("unwind_cases.c", NO_FRAME_POINTERS, name="unwind_cases_O2")
    leaked, reports, _ = trace_leaker([program, "chain"])
    stack = leak_stack(reports[-1], "chain_5", leaked)
    assert symbols(stack)[:6] == ["chain_5", "chain_4", "chain_3", "chain_2", "chain_1", "main"]
    # 32 allocations from one call site: one deduplicated stack record.
    assert len([s for s in reports[-1]["stacks"] if "chain_5" in symbols(s)]) == 1


def test_recursive_calls_keep_one_frame_per_level(build):
    program = build("unwind_cases.c", NO_FRAME_POINTERS, name="unwind_cases_O2")
    leaked, reports, _ = trace_leaker([program, "recursive"])
    stack = leak_stack(reports[-1], "recurse", leaked)
    assert symbols(stack)[:8] == ["recurse"] * 7 + ["main"]  # recurse(6) .. recurse(0)


def test_a_leak_66_frames_deep_shows_every_frame_down_to_main(build):
    program = build("unwind_cases.c", NO_FRAME_POINTERS, name="unwind_cases_O2")
    leaked, reports, _ = trace_leaker([program, "deep"])
    stack = leak_stack(reports[-1], "recurse", leaked)
    names = symbols(stack)
    assert names[:66] == ["recurse"] * 65 + ["main"], names  # recurse(64) .. recurse(0)
    assert not any("deeper than" in w for w in reports[-1]["warnings"]), reports[-1]["warnings"]


def test_a_stack_deeper_than_the_walk_is_cut_at_128_frames_and_says_so(build):
    program = build("unwind_cases.c", NO_FRAME_POINTERS, name="unwind_cases_O2")
    leaked, reports, _ = trace_leaker([program, "deeper"])
    stack = leak_stack(reports[-1], "recurse", leaked)
    assert symbols(stack) == ["recurse"] * 128, symbols(stack)
    assert "some stacks are deeper than 128 frames and were cut there" in reports[-1]["warnings"]


def test_leak_in_a_signal_handler_continues_into_the_interrupted_code(build):
    program = build("unwind_cases.c", NO_FRAME_POINTERS, name="unwind_cases_O2")
    leaked, reports, _ = trace_leaker([program, "signal"])
    stack = leak_stack(reports[-1], "on_signal", leaked)
    names = symbols(stack)
    assert names[0] == "on_signal", names
    # handler <- sigreturn trampoline <- raise's internals <- raise <- fire_signals <- main
    assert_chain(stack, ["raise", "fire_signals", "main"])
    assert names.index("raise") > 1, names
