"""A library loaded with dlopen after leaktrace attached (root + BPF).

tests/programs/dlopen_leak.c loads libleak.c built without frame pointers,
so only its unwind tables lead out of it, and leaks through it at once, then
again once leaktrace has had time to load the new tables. Its frames
symbolize; the later stack is complete down to main; the first is either
complete too or its last frame says the walk stopped in code whose tables
were not loaded yet (a race this test cannot fix in either direction). A
library that brings its own malloc is named in a warning.

Tolerance: none; the program leaks exactly what it prints.
"""
import time

import pytest

from harness import OLDER_THAN_MS, SETTLE_S, LeakyProcess, Tracer, describe_stacks, stacks_with

pytestmark = pytest.mark.privileged

REFRESH_WAIT_S = 2  # > the unwinder's refresh period and a report interval


def symbols(stack):
    return [frame.get("symbol") or "?" for frame in stack["frames"]]


def trace_dlopen(build, extra=()):
    library = build("libleak.c", ["-shared", "-fPIC", "-O2", "-fomit-frame-pointer"], name="libleak_nofp.so")
    program = build("dlopen_leak.c", ["-ldl"])
    with LeakyProcess([program, library, *extra]) as leaker:
        with Tracer(["attach", "-p", leaker.pid, "--format", "json", "--older-than", OLDER_THAN_MS,
                     "--top", 0, 1]) as tracer:
            tracer.wait_tracing()
            leaker.go()
            leaker.wait_line("LOADED")
            time.sleep(REFRESH_WAIT_S)
            leaker.proc.stdin.write("again\n")
            leaker.proc.stdin.flush()
            leaked = leaker.wait_leaked()
            time.sleep(SETTLE_S)
            reports = tracer.stop()
            assert tracer.returncode == 0, tracer.describe()
    return leaked, reports[-1]




def test_frames_of_a_library_loaded_after_attach_symbolize_and_unwind(build):
    leaked, final = trace_dlopen(build)
    later = stacks_with(final, "leak_later")
    assert len(later) == 1, describe_stacks(final)
    assert symbols(later[0])[:3] == ["lib_leak", "leak_later", "main"], symbols(later[0])
    assert later[0]["frames"][1]["unwind"] == "cfi", later[0]["frames"][1]
    assert later[0]["frames"][0]["module"].endswith("libleak_nofp.so"), later[0]["frames"][0]
    assert (later[0]["bytes"], later[0]["count"]) == (leaked["sites"]["leak_later"]["bytes"], 20)
    # The first leak: every block is in a lib_leak stack that is either whole or says where it stopped.
    first = [s for s in stacks_with(final, "lib_leak") if "leak_later" not in symbols(s)]
    assert sum(s["count"] for s in first) == 10, describe_stacks(final)
    for stack in first:
        names = symbols(stack)
        if names[:3] != ["lib_leak", "leak_right_after_dlopen", "main"]:
            assert "the walk stops here" in stack["frames"][-1]["note"], stack["frames"]
            assert any("stop in code mapped after its unwind tables were loaded" in w
                       for w in final["warnings"]), final["warnings"]


def test_an_allocator_brought_in_by_dlopen_is_named(build):
    allocator = build("fake_malloc.c", ["-shared", "-fPIC"], name="libfake_malloc.so")
    _, final = trace_dlopen(build, [allocator])
    notes = [w for w in final["warnings"] if "libfake_malloc.so" in w and "defines malloc" in w]
    assert len(notes) == 1, final["warnings"]
