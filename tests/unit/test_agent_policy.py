"""Escalation choice, cool-down and sampling (agent/policy.py), the probe budget
(agent/budget.py) and the agent's option parsers (agent/config.py)."""
import pytest

from leaktrace.judge import trend
from leaktrace.agent.budget import HIT_NS, Budget, ProbeCost
from leaktrace.agent.config import parse_budget, parse_listen, parse_size
from leaktrace.agent.policy import FIRST_SAMPLE_RATE, SAMPLE_STEP, Escalations
from leaktrace.agent.watch import Judged, Key
from leaktrace.base.errors import UsageError


def suspect(pid, rate):
    return Judged(Key("process", "app", pid), trend.Trend(trend.GROWING, rate, 1.0, 0, 60.0, 0))


def test_the_fastest_target_not_cooling_down_is_chosen():
    policy = Escalations(cooldown_s=100)
    fast, slow = suspect(1, 900), suspect(2, 100)
    assert policy.choose([fast, slow], now=0) == fast
    policy.finished(fast.key, "completed", now=10)
    assert policy.choose([fast, slow], now=50) == slow
    policy.finished(slow.key, "target_exited", now=60)
    assert policy.choose([fast, slow], now=100) is None
    assert policy.choose([fast, slow], now=110) == fast
    assert policy.counts == {("process", "completed"): 1, ("process", "target_exited"): 1}


def test_a_trace_stopped_for_the_budget_makes_the_next_one_sample_harder():
    policy = Escalations(cooldown_s=0)
    key = suspect(1, 1).key
    assert policy.sample_rate(key) == 0
    policy.finished(key, "over_budget", now=0)
    assert policy.sample_rate(key) == FIRST_SAMPLE_RATE
    policy.finished(key, "over_budget", now=1)
    assert policy.sample_rate(key) == FIRST_SAMPLE_RATE * SAMPLE_STEP
    policy.finished(key, "completed", now=2)
    assert policy.sample_rate(key) == FIRST_SAMPLE_RATE * SAMPLE_STEP
    assert Escalations(0, sample_rate=512).sample_rate(key) == 512


def test_budget_credit_accrues_to_a_cap_and_an_escalation_starts_at_half_of_it():
    budget = Budget(share=0.02, cpus=2, horizon_s=100, now=0)  # cap: 4 CPU-seconds
    assert not budget.can_start(now=10)
    assert budget.can_start(now=50)
    budget.accrue(now=10_000)
    assert budget.credit == pytest.approx(4.0)


def test_budget_stops_before_an_overdraft_and_keeps_the_lifetime_share():
    budget = Budget(share=0.02, cpus=2, horizon_s=100, now=0)
    budget.accrue(now=100)  # 4 CPU-seconds of credit
    assert not budget.overdraws(rate=3.5, now=100)
    assert budget.overdraws(rate=4.5, now=100)  # 4.5 CPU-s until the next check and through the stop
    spent, now = 0.0, 100.0
    while not budget.overdraws(rate=1.0, now=now):  # a trace costing one CPU
        budget.spend(0.1)
        spent, now = spent + 0.1, now + 0.1
    assert budget.overhead(now) <= 0.02 and spent == pytest.approx(budget.spent)


def test_probe_cost_counts_run_time_and_every_hit():
    cost = ProbeCost(run_time_ns=2_000_000, runs=1000)
    assert cost.seconds("user") == pytest.approx((2_000_000 + 1000 * HIT_NS["user"]) / 1e9)
    assert cost.seconds("kernel") < cost.seconds("user")


def test_options_parse_and_bad_values_are_one_usage_error():
    assert parse_budget("2%") == pytest.approx(0.02) and parse_budget("0.5") == 0.5
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_size("256MiB", "--max-out") == 256 << 20 and parse_size("64k", "x") == 65536
    for bad in (lambda: parse_budget("0%"), lambda: parse_budget("150%"), lambda: parse_budget("lots"),
                lambda: parse_listen("9464"), lambda: parse_listen("host:99999"),
                lambda: parse_size("12 parsecs", "--max-out")):
        with pytest.raises(UsageError):
            bad()
