"""Totals that scale (root + BPF): a steady leak from 1,000 and from 20,000
distinct stacks (tests/programs/many_sites.c), long enough to fill the totals
map of a design with one entry per stack and 268 ms epoch (131,072 entries,
the default --max-buckets). Old age blocks are folded out of the map, so the
map does not fill, and the totals stay exact.

Tolerance: none. The program leaks every block on purpose and allocates
nothing else after "go", so the report's total is exactly what it printed.
"""
import time

import pytest

from harness import OLDER_THAN_MS, SETTLE_S, LeakyProcess, Tracer, leaked_under, stacks_with

pytestmark = pytest.mark.privileged

DEFAULT_MAX_BUCKETS = 131072
EPOCH_S = 2 ** 28 / 1e9
LEAKERS = [f"leak_site_{n}" for n in range(10)]


@pytest.mark.parametrize("stacks, seconds, round_ms, interval, top", [
    # reports every 5 s (the default), each folding the map
    pytest.param(1000, 45, 250, 5, 1000, id="1000-stacks-every-epoch"),
    # one report at the end: between reports the map is folded when it gets
    # crowded, not only when a report reads it; --top 0 shows every stack
    pytest.param(20000, 15, 1000, 600, 0, id="20000-stacks-every-second"),
])
def test_steady_leak_from_many_stacks_is_counted_exactly(build, stacks, seconds, round_ms, interval, top):
    # The (stack, epoch) pairs this run makes: more than the old map could hold.
    assert stacks * seconds / max(round_ms / 1000, EPOCH_S) > DEFAULT_MAX_BUCKETS
    binary = build("many_sites.c")
    args = ["attach", "-p", None, "--format", "json", "--older-than", OLDER_THAN_MS,
            "--top", top, interval]
    with LeakyProcess([binary, stacks, seconds, round_ms]) as leaker:
        args[2] = leaker.pid
        with Tracer(args) as tracer:
            tracer.wait_tracing()
            leaker.go()
            leaked = leaker.wait_leaked(timeout=seconds + 120)
            time.sleep(SETTLE_S)
            reports = tracer.stop(timeout=300)
            assert tracer.returncode == 0, tracer.describe()
    final = reports[-1]
    losses = final["losses"]
    assert losses["bucket_map_full"] == 0 and losses["alloc_map_full"] == 0, losses
    assert (final["totals"]["bytes"], final["totals"]["count"]) == (leaked["bytes"], leaked["count"]), (
        final["totals"], leaked)
    for function in LEAKERS:
        found = leaked_under(final, function)
        assert found["stacks"] > 0, f"{function} is not named in any stack"
        expected = leaked["sites"][function]
        if losses["stack_failed"] == 0:
            assert (found["bytes"], found["count"]) == (expected["bytes"], expected["count"]), function
        else:  # stacks past --max-stacks are counted, as "stack not collected"
            assert found["bytes"] <= expected["bytes"], function
    if losses["stack_failed"] == 0:
        assert sum(len(stacks_with(final, f)) for f in LEAKERS) == stacks
    if len(reports) >= 4:  # judged over the intervals: every stack keeps leaking
        verdicts = {stack["verdict"] for stack in final["stacks"]}
        assert verdicts == {"leak"}, verdicts
