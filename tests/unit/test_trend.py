"""The growth model triage and the agent share (leaktrace/judge/trend.py)."""
import pytest

from leaktrace.judge import trend
from leaktrace.judge.trend import TrendPolicy

MiB = 1 << 20
POLICY = TrendPolicy(min_points=6, min_span_s=60, floor_bytes=MiB)


def series(values, step_s=10.0):
    return [(i * step_s, int(v)) for i, v in enumerate(values)]


def test_a_steady_leak_is_growing_with_its_rate():
    # 100 KiB/s for two minutes on top of 50 MiB, sampled every 10 s
    judged = trend.judge(series(50 * MiB + 100 * 1024 * 10 * i for i in range(13)), POLICY)
    assert judged.state == trend.GROWING
    assert judged.rate == pytest.approx(100 * 1024)
    assert judged.growth == pytest.approx(12 * MiB, rel=0.03)


def test_a_start_up_that_plateaus_is_not_a_leak():
    # +40 MiB in the first 20 s, then flat: the fit over the window still slopes up
    values = [10 * MiB, 30 * MiB, 50 * MiB] + [50 * MiB] * 10
    judged = trend.judge(series(values), POLICY)
    assert judged.rate > 0 and judged.state == trend.PLATEAU


def test_churn_that_wanders_is_stable():
    values = [40 * MiB + (8 * MiB if i % 2 else 0) for i in range(13)]
    assert trend.judge(series(values), POLICY).state == trend.STABLE


def test_growth_below_the_floor_is_stable():
    values = [40 * MiB + 1000 * i for i in range(13)]  # 12 KB in two minutes
    assert trend.judge(series(values), POLICY).state == trend.STABLE


def test_a_series_shorter_than_the_fit_window_is_unknown():
    # one window's difference is no evidence, however steep
    steep = series((i * 20 * MiB for i in range(6)), step_s=2.0)
    assert trend.judge(steep, POLICY).state == trend.UNKNOWN
    assert trend.judge(series([MiB] * 3), POLICY).state == trend.UNKNOWN
    assert trend.judge([], POLICY).state == trend.UNKNOWN


def test_the_floor_scales_with_the_level():
    big = TrendPolicy(min_points=6, floor_bytes=MiB, floor_share=0.01)
    assert trend.floor(big, 10 * 1024 * MiB) == pytest.approx(0.01 * 10 * 1024 * MiB)
    assert trend.floor(big, 10 * MiB) == MiB
