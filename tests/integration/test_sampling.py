"""`leaktrace attach --sample-rate BYTES` on real leaking programs (root + BPF).

Sampling by bytes keeps an allocation of size s with probability min(1, s/R)
and scales it back by 1/p, so estimates are unbiased. Two properties:
- below the rate's reach (every leaked block >= R) nothing is dropped, so every
  leak the unsampled tests check is still exact to the usual ±10%;
- above it, the estimate of the fibonacci leak is within 10% of the truth.
"""
import math

import pytest

from harness import assert_within, describe_stacks, leaked_under, trace_leaker

pytestmark = pytest.mark.privileged

# Smallest leaked block in the cases below is 96 bytes (realloc_growth's records).
RATE_BELOW_BLOCKS = 64

# (source, build flags, output name, argv tail, leaking function, kind)
EXACT_CASES = [
    ("fibonacci.c", (), None, ["50"], "fibonacci", "heap"),
    ("fibonacci.c", ("-ljemalloc",), "fibonacci_jemalloc", ["40"], "fibonacci", "heap"),
    ("realloc_growth.c", (), None, [], "grow_table", "heap"),
    ("realloc_growth.c", (), None, [], "make_record", "heap"),
    ("memalign_family.c", (), None, [], "leak_posix_memalign", "heap"),
    ("memalign_family.c", (), None, [], "leak_pvalloc", "heap"),
    ("mmap_regions.c", (), None, [], "map_and_keep", "mmap"),
    ("two_threads.c", (), None, [], "leaky_worker", "heap"),
]


@pytest.mark.parametrize("src,flags,name,argv,function,kind", EXACT_CASES,
                         ids=[f"{c[2] or c[0]}:{c[4]}" for c in EXACT_CASES])
def test_leaks_of_blocks_at_least_the_rate_stay_exact(build, src, flags, name, argv, function, kind):
    program = build(src, list(flags), name=name)
    leaked, reports, _ = trace_leaker([program, *argv], ["--sample-rate", str(RATE_BELOW_BLOCKS)])
    final = reports[-1]
    found = leaked_under(final, function, kind)
    expected = leaked["sites"][function]
    context = f"\n{function}: {found}\n" + describe_stacks(final)
    assert found["stacks"], f"no {kind} stack includes {function}" + context
    assert_within(found["bytes"], expected["bytes"], 10, f"{function} bytes" + context)
    assert_within(found["count"], expected["count"], 10, f"{function} count" + context)


# fibonacci leaks CALLS tables of 8 KiB. At R = 32 KiB each is kept with
# p = 1/4 and weight 4: the estimate's relative standard deviation is
# sqrt((1 - p) / (CALLS * p)) = 1.9%, so ±10% is over 5 standard deviations
# (a false failure about once in ten million runs).
SAMPLED_RATE = 32768
SAMPLED_CALLS = 8000
TOLERANCE_PCT = 10


def test_sampled_estimate_of_the_fibonacci_leak_is_within_ten_percent(build):
    p = 8192 / SAMPLED_RATE
    assert 5 * math.sqrt((1 - p) / (SAMPLED_CALLS * p)) < TOLERANCE_PCT / 100
    leaked, reports, _ = trace_leaker([build("fibonacci.c"), str(SAMPLED_CALLS)],
                                      ["--sample-rate", str(SAMPLED_RATE)])
    final = reports[-1]
    found = leaked_under(final, "fibonacci")
    truth = leaked["sites"]["fibonacci"]
    context = f"\nfibonacci: {found} truth: {truth}\n" + describe_stacks(final)
    assert_within(found["bytes"], truth["bytes"], TOLERANCE_PCT, "estimated bytes" + context)
    assert_within(found["count"], truth["count"], TOLERANCE_PCT, "estimated count" + context)
    # Really sampled: most calls were skipped in the kernel, yet not reported as losses.
    assert final["events"]["sampled_out"] > SAMPLED_CALLS / 2, final["events"]
    assert "unknown_frees" not in final["losses"], final["losses"]
    assert final.get("sample_rate") == SAMPLED_RATE, final.get("sample_rate")
