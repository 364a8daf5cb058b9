"""`leaktrace attach` against real leaking programs, for real (root + BPF).

Each program says exactly what it left unfreed; the final JSON report must
show the leaking function in a stack with bytes and counts within ±10%.
"""
import subprocess
import time
import uuid

import pytest

from harness import (
    OLDER_THAN_MS, SETTLE_S, LeakyProcess, Tracer, assert_clean_error, assert_within, describe_stacks,
    leaked_under, run_leaktrace, stack_with, stacks_with, trace, trace_leaker,
)
from leaktrace.probes import uretprobe

pytestmark = pytest.mark.privileged

REPORT_KEYS = {"schema", "mode", "pid", "targets", "timestamp", "elapsed_s", "totals",
               "events", "losses", "warnings", "stacks"}


def assert_site(report, function, expected, kind="heap"):
    """The stacks under function hold what the program says it leaked (±10%)."""
    found = leaked_under(report, function, kind)
    context = f"\n{function}: {found}\n" + describe_stacks(report)
    assert found["stacks"], f"no {kind} stack includes {function}" + context
    assert_within(found["bytes"], expected["bytes"], 10, f"{function} bytes" + context)
    assert_within(found["count"], expected["count"], 10, f"{function} count" + context)


def test_fibonacci_thread_leak_is_reported_with_its_stack(build):
    program = build("fibonacci.c")
    leaked, reports, _ = trace_leaker([program, "50"])
    final = reports[-1]
    assert REPORT_KEYS <= set(final), f"report lacks {REPORT_KEYS - set(final)}"
    assert_site(final, "fibonacci", leaked["sites"]["fibonacci"])
    frame = next(f for f in stack_with(final, "fibonacci")["frames"]
                 if (f.get("symbol") or "").startswith("fibonacci"))
    assert (frame.get("module") or "").endswith("/fibonacci"), frame
    target = final["targets"][0]
    assert "libc.so" in target["allocator"], target


def test_a_full_allocation_map_is_reported_and_tracing_goes_on(build):
    # 3000 leaked tables into a map of 1024 records: at least 1976 cannot be tracked.
    leaked, reports, _ = trace_leaker([build("fibonacci.c"), "3000"], ["--max-allocs", "1024"])
    final = reports[-1]
    assert leaked["count"] == 3000
    assert final["losses"]["alloc_map_full"] >= 3000 - 1024, final["losses"]
    assert any("allocation map is full (--max-allocs 1024)" in w for w in final["warnings"]), final["warnings"]
    found = leaked_under(final, "fibonacci")
    assert 0 < found["count"] <= 1024, found


def test_realloc_counts_only_the_last_block_of_a_grown_table(build):
    leaked, reports, _ = trace_leaker([build("realloc_growth.c")])
    assert_site(reports[-1], "grow_table", leaked["sites"]["grow_table"])
    assert_site(reports[-1], "make_record", leaked["sites"]["make_record"])


MEMALIGN_LEAKERS = ("leak_posix_memalign", "leak_aligned_alloc", "leak_memalign",
                    "leak_valloc", "leak_pvalloc")


@pytest.fixture(scope="module")
def memalign_trace(build):
    leaked, reports, _ = trace_leaker([build("memalign_family.c")])
    return leaked, reports[-1]


@pytest.mark.parametrize("function", MEMALIGN_LEAKERS)
def test_each_memalign_family_function_is_traced(memalign_trace, function):
    leaked, report = memalign_trace
    assert_site(report, function, leaked["sites"][function])


def test_leak_inside_a_shared_library(build):
    lib = build("libleak.c", ["-shared", "-fPIC"], name="libleak.so")
    program = build("uses_libleak.c", [f"-L{lib.parent}", "-lleak", f"-Wl,-rpath,{lib.parent}"])
    leaked, reports, _ = trace_leaker([program])
    final = reports[-1]
    assert_site(final, "lib_leak", leaked["sites"]["lib_leak"])
    frame = next(f for f in stack_with(final, "lib_leak")["frames"] if f.get("symbol") == "lib_leak")
    assert (frame.get("module") or "").endswith("libleak.so"), frame


def test_cpp_new_leak_shows_the_demangled_method(build):
    leaked, reports, _ = trace_leaker([build("cache.cpp", cxx=True)])
    final = reports[-1]
    assert_site(final, "Cache::insert", leaked["sites"]["Cache::insert"])
    symbols = [f.get("symbol") or "" for f in stack_with(final, "Cache::insert")["frames"]]
    method = next(s for s in symbols if s.startswith("Cache::insert"))
    assert method == "Cache::insert(std::string const&)", symbols
    assert not any(s.startswith("_Z") for s in symbols), f"mangled names left: {symbols}"


def test_a_process_under_a_seccomp_filter_survives_its_return_probes(build):
    # seccomp_leak.c kills itself on the uretprobe syscall, as a strict
    # sandbox would: kernels that skip seccomp for it (or predate it) trace it;
    # one that filters it (6.11 until the Feb 2025 fix) must be refused.
    with LeakyProcess([build("seccomp_leak.c"), "20"]) as leaker:
        leaker.wait_line("FILTERED")  # the filter is on before leaktrace attaches
        if uretprobe.kernel_behaviour() == "filtered":
            assert_clean_error(run_leaktrace(["attach", "-p", leaker.pid, "--duration", "1"]),
                               "seccomp", f"process {leaker.pid}")
            assert leaker.proc.poll() is None
            return
        leaked, reports, _ = trace(leaker)
        assert leaker.stop() == 0, "the traced process was killed"
    assert_site(reports[-1], "keep_block", leaked["sites"]["keep_block"])


def test_statically_linked_executable(build):
    program = build("fibonacci.c", ["-static"], name="fibonacci_static")
    leaked, reports, _ = trace_leaker([program, "40"])
    final = reports[-1]
    assert_site(final, "fibonacci", leaked["sites"]["fibonacci"])
    # The executable itself provides malloc.
    assert final["targets"][0]["allocator"].endswith("fibonacci_static"), final["targets"]


def test_program_linked_with_jemalloc(build):
    program = build("fibonacci.c", ["-ljemalloc"], name="fibonacci_jemalloc")
    leaked, reports, _ = trace_leaker([program, "40"])
    final = reports[-1]
    assert_site(final, "fibonacci", leaked["sites"]["fibonacci"])
    target = final["targets"][0]
    assert "jemalloc" in target["allocator"] + target.get("allocator_name", ""), target


def test_anonymous_mmap_kept_is_reported_and_unmapped_is_not(build):
    leaked, reports, _ = trace_leaker([build("mmap_regions.c")])
    final = reports[-1]
    assert_site(final, "map_and_keep", leaked["sites"]["map_and_keep"], kind="mmap")
    assert not stacks_with(final, "map_and_release"), (
        "unmapped regions reported\n" + describe_stacks(final))


def test_only_the_leaking_thread_is_reported(build):
    leaked, reports, _ = trace_leaker([build("two_threads.c")])
    final = reports[-1]
    assert_site(final, "leaky_worker", leaked["sites"]["leaky_worker"])
    assert not stacks_with(final, "tidy_worker"), (
        "tidy_worker freed everything but is reported\n" + describe_stacks(final))


def test_churn_that_frees_everything_reports_nothing_past_the_age_filter(build):
    _, reports, _ = trace_leaker([build("churn.c")])
    final = reports[-1]
    assert not stacks_with(final, "churn"), "churn reported\n" + describe_stacks(final)
    # Not vacuous: the probes did see the churn (about a million events).
    seen = sum(v for v in final["events"].values() if isinstance(v, int))
    assert seen > 10_000, f"events={final['events']}: the churn was not traced"


def test_interval_and_count_print_that_many_reports_then_exit(build):
    with LeakyProcess([build("fibonacci.c")]) as leaker, Tracer(
            ["attach", "-p", leaker.pid, "1", "3", "--format", "json", "--older-than", "0"]) as tracer:
        tracer.wait_tracing()
        leaker.go()
        assert tracer.wait(30) == 0, tracer.describe()
    reports = tracer.reports()
    assert len(reports) == 3, tracer.describe()
    assert [r["pid"] for r in reports] == [leaker.pid] * 3
    assert reports[0]["elapsed_s"] < reports[1]["elapsed_s"] < reports[2]["elapsed_s"]


def test_duration_stops_tracing_with_a_final_report(build):
    with LeakyProcess([build("fibonacci.c")]) as leaker, Tracer(
            ["attach", "-p", leaker.pid, "--duration", "3", "--format", "json",
             "--older-than", OLDER_THAN_MS]) as tracer:
        tracer.wait_tracing()
        leaker.go()
        leaked = leaker.wait_leaked()
        assert tracer.wait(30) == 0, tracer.describe()
    assert_site(tracer.reports()[-1], "fibonacci", leaked["sites"]["fibonacci"])


def test_two_pids_are_traced_and_told_apart(build):
    with LeakyProcess([build("fibonacci.c")]) as fib, LeakyProcess([build("two_threads.c")]) as two:
        with Tracer(["attach", "-p", fib.pid, "-p", two.pid, "--format", "json",
                     "--older-than", OLDER_THAN_MS]) as tracer:
            tracer.wait_tracing()
            fib.go()
            two.go()
            fib_leaked, two_leaked = fib.wait_leaked(), two.wait_leaked()
            time.sleep(SETTLE_S)
            final = tracer.stop()[-1]
    assert sorted(t["pid"] for t in final["targets"]) == sorted([fib.pid, two.pid])
    assert_site(final, "fibonacci", fib_leaked["sites"]["fibonacci"])
    assert_site(final, "leaky_worker", two_leaked["sites"]["leaky_worker"])
    assert {s["pid"] for s in stacks_with(final, "fibonacci")} == {fib.pid}
    assert {s["pid"] for s in stacks_with(final, "leaky_worker")} == {two.pid}


@pytest.mark.docker
def test_program_inside_a_container_is_symbolized(build, docker):
    program = build("fibonacci.c")
    image = docker.build_image([program], "leaktrace-test/fibonacci:latest")
    name = f"leaktrace-test-{uuid.uuid4().hex[:8]}"
    try:
        with LeakyProcess(["docker", "run", "-i", "--rm", "--network", "none", "--name", name,
                           image, "/app/fibonacci", "30"]) as leaker:
            leaker.pid = docker.container_pid(name)
            leaked, reports, _ = trace(leaker)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert_site(reports[-1], "fibonacci", leaked["sites"]["fibonacci"])

