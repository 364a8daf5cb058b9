""""tracing" means every probe is live: a program that allocates the moment
leaktrace prints that line has every allocation counted, with an empty cache
(unwind tables and probe placements worked out during the attach) and then
with the cache that first run filled. Counts are exact: a probe that went
live after the line would lose the first allocations."""
import os
import time

import pytest

from harness import OLDER_THAN_MS, SETTLE_S, LeakyProcess, Tracer, describe_stacks, leaked_under, parse_leaked

pytestmark = pytest.mark.privileged

CALLS = 200


def cached_files(cache_dir) -> int:
    return sum(len(files) for _, _, files in os.walk(cache_dir))


def attach_from_the_line(build, env) -> None:
    with LeakyProcess([build("fibonacci.c"), CALLS]) as leaker:
        with Tracer(["attach", "-p", leaker.pid, "--format", "json", "--older-than", OLDER_THAN_MS],
                    env=env) as tracer:
            tracer.wait_tracing()
            leaker.go()  # the first allocation follows the line at once
            leaked = leaker.wait_leaked()
            time.sleep(SETTLE_S)
            reports = tracer.stop()
            assert tracer.returncode == 0 and reports, tracer.describe()
    found = leaked_under(reports[-1], "fibonacci")
    assert found["count"] == leaked["sites"]["fibonacci"]["count"], describe_stacks(reports[-1])
    assert found["bytes"] == leaked["sites"]["fibonacci"]["bytes"], describe_stacks(reports[-1])


def run_from_the_first_instruction(build, env) -> None:
    with Tracer(["run", "--format", "json", "--older-than", OLDER_THAN_MS, "--",
                 build("early_leak.c"), "800"], env=env) as tracer:
        assert tracer.wait(60) == 0, tracer.describe()
    leaked = parse_leaked(tracer.other_output())
    final = tracer.reports()[-1]
    found = leaked_under(final, "early_leak")
    assert (found["count"], found["bytes"]) == (leaked["sites"]["early_leak"]["count"],
                                                leaked["sites"]["early_leak"]["bytes"]), describe_stacks(final)


@pytest.mark.parametrize("trace_from_start", [attach_from_the_line, run_from_the_first_instruction],
                         ids=["attach", "run"])
def test_every_allocation_after_the_tracing_line_is_counted_cold_and_warm(build, tmp_path, trace_from_start):
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "LEAKTRACE_CACHE_DIR": str(cache_dir)}
    trace_from_start(build, env)  # cold: nothing cached yet
    filled = cached_files(cache_dir)
    assert filled > 0, "the first run cached nothing: the second would not be warm"
    trace_from_start(build, env)  # warm
    assert cached_files(cache_dir) == filled, "the warm run had to compute something again"
