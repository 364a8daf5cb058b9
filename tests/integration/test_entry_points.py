"""Every allocation entry point of the allocator a program uses: C++ programs on each
allocator, with leaks made with every kind of operator new, and jemalloc's own API.

jemalloc, tcmalloc and mimalloc define operator new and delete themselves
(often with malloc's fast path inlined), so leaktrace probes them there;
with glibc, libstdc++'s operator new runs malloc. Either way each leaking
method is found with its exact count and bytes, demangled, and a block
allocated before attaching and deleted after is an unknown free, not a crash.
"""
import subprocess
import time

import pytest

from harness import (
    OLDER_THAN_MS, SETTLE_S, LeakyProcess, Tracer, describe_stacks, leaked_under, parse_leaked, stacks_with,
    trace, trace_leaker,
)

pytestmark = pytest.mark.privileged

ALLOCATORS = {"glibc": [], "jemalloc": ["-ljemalloc"], "tcmalloc": ["-ltcmalloc"], "mimalloc": ["-lmimalloc"]}
METHODS = ("Store::keep_plain", "Store::keep_array", "Store::keep_nothrow", "Store::keep_aligned",
           "Store::keep_aligned_nothrow")
EARLY = 16  # cxx_new.cpp: blocks made before tracing, deleted after
# Where the kernel cannot let a bad_alloc leave a probed new (lockdown), the
# throwing new is hooked only on request; these programs never throw.
THROWING_NEW = ["--probe-throwing-new"]


def program(build, allocator):
    return build("cxx_new.cpp", ["-Wl,--no-as-needed", *ALLOCATORS[allocator]], cxx=True,
                 name=f"cxx_new_{allocator}")


def assert_exact_sites(report, leaked):
    for method in METHODS:
        found = leaked_under(report, f"{method}()")  # keep_aligned( is no keep_aligned_nothrow(
        expected = leaked["sites"][method]
        context = f"\n{method}: {found}, program says {expected}\n" + describe_stacks(report, 20)
        assert (found["count"], found["bytes"]) == (expected["count"], expected["bytes"]), context
        for stack in stacks_with(report, f"{method}()"):
            # The method's own frame is demangled (a C++ signature, not _ZN5Store...).
            names = [f.get("symbol") or "" for f in stack["frames"]]
            assert not any(name.startswith("_ZN5Store") for name in names), names


@pytest.mark.parametrize("allocator", sorted(ALLOCATORS))
def test_cxx_new_leaks_are_found_on_each_allocator(build, allocator):
    leaked, reports, _ = trace_leaker([program(build, allocator)], THROWING_NEW)
    final = reports[-1]
    assert_exact_sites(final, leaked)
    assert final["events"]["unknown_frees"] >= EARLY, final["events"]
    assert final["targets"][0]["allocator_name"] == allocator, final["targets"]
    hooked = final["targets"][0]["hooked"]
    symbols = [symbol for names in hooked.values() for symbol in names]
    if allocator == "glibc":  # libstdc++'s new runs malloc: new itself is not probed
        assert "malloc" in symbols and not any(s.startswith("_Zn") for s in symbols), hooked
    else:  # the allocator's own operator new is
        assert "_Znwm" in symbols and "_ZnwmSt11align_val_t" in symbols, hooked


def test_a_cxx_program_that_deletes_everything_reports_nothing(build):
    _, reports, _ = trace_leaker([program(build, "jemalloc"), "clean"], THROWING_NEW)
    final = reports[-1]
    for method in METHODS:
        assert not stacks_with(final, method), describe_stacks(final)


def test_run_finds_cxx_new_leaks_with_jemalloc(build):
    with Tracer(["run", "--format", "json", "--older-than", OLDER_THAN_MS, *THROWING_NEW, "--",
                 program(build, "jemalloc")], stdin=subprocess.PIPE) as tracer:
        tracer.go_until_leaked()
        time.sleep(SETTLE_S)
        tracer.proc.stdin.close()
        assert tracer.wait(30) == 0, tracer.describe()
    assert_exact_sites(tracer.reports()[-1], parse_leaked(tracer.other_output()))


def test_jemalloc_native_api_leaks_are_found(build):
    # mallocx (plain and MALLOCX_ALIGN), rallocx, xallocx grown in place; sdallocx and dallocx free.
    leaked, reports, _ = trace_leaker([build("jemalloc_api.c", ["-ljemalloc"])])
    final = reports[-1]
    for function in ("keep_mallocx", "keep_aligned_mallocx", "keep_rallocx", "keep_xallocx"):
        found, expected = leaked_under(final, function), leaked["sites"][function]
        assert (found["count"], found["bytes"]) == (expected["count"], expected["bytes"]), (
            f"{function}: {found}, program says {expected}\n" + describe_stacks(final))
    assert final["events"]["unknown_frees"] == 0, final["events"]  # every sdallocx/dallocx was of a seen block


# mimalloc's new never throws: built as C, it aborts when no new-handler is set.
@pytest.mark.parametrize("allocator", ["jemalloc", "tcmalloc"])
def test_a_program_that_catches_bad_alloc_from_new_survives_tracing(build, allocator):
    # Never harm the target: either the kernel lets each bad_alloc unwind past the
    # return probe (and new is hooked), or new is left alone and the report says so.
    exe = build("cxx_bad_alloc.cpp", ["-Wl,--no-as-needed", *ALLOCATORS[allocator]], cxx=True,
                name=f"cxx_bad_alloc_{allocator}")
    with LeakyProcess([exe]) as leaker:
        leaked, reports, _ = trace(leaker)
        leaker.wait_line("CAUGHT 16")  # 8 rounds of new[] and aligned new, each caught
        assert leaker.stop() == 0, "the traced program died"
    final = reports[-1]
    symbols = [s for names in final["targets"][0]["hooked"].values() for s in names]
    if "_ZnwmSt11align_val_t" in symbols:  # hooked: the leak through aligned new is found
        found = leaked_under(final, "Parser::keep()")
        assert (found["count"], found["bytes"]) == (leaked["sites"]["Parser::keep"]["count"],
                                                    leaked["sites"]["Parser::keep"]["bytes"]), describe_stacks(final)
    else:
        assert any(w.startswith("the throwing operator new") for w in final["warnings"]), final["warnings"]
