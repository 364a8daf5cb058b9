"""timing: the breakdown sums a repeated step and keeps the order steps ran in."""
from __future__ import annotations

from leaktrace.base import timing


def test_the_breakdown_sums_repeated_steps_in_the_order_they_first_ran():
    steps = [("symbol tables", 0.25), ("compile", 1.5), ("symbol tables", 0.5), ("uprobes", 0.125)]
    assert timing.breakdown(steps) == "symbol tables 0.75 s, compile 1.50 s, uprobes 0.12 s"


def test_a_step_is_timed_even_when_it_raises():
    before = len(timing._steps)
    try:
        with timing.step("failing"):
            raise ValueError("boom")
    except ValueError:
        pass
    assert timing._steps[before][0] == "failing" and timing._steps[before][1] >= 0
