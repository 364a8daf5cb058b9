"""escalate's final report of a trace the agent stops early keeps what it saw.

The probe is a fake whose snapshot holds a young and an old allocation; the
Session around it, its reports and the age filter are the real ones.
"""
from leaktrace.agent.escalate import Request, _run
from leaktrace.base.model import Bucket, Frame, RawStack, Snapshot, StackKey

MS = 1_000_000
NOW = 50_000 * MS
YOUNG, OLD = StackKey(pid=7, stack_id=1), StackKey(pid=7, stack_id=2)


class HeldProbe:
    """Holds 64 KiB allocated 100 ms before each snapshot and 4 KiB allocated 5 s before."""

    def snapshot(self, targets, with_allocations=False):
        buckets = (Bucket(stack=YOUNG, start_ns=NOW - 200 * MS, end_ns=NOW - 100 * MS, bytes=64 << 10, count=1),
                   Bucket(stack=OLD, start_ns=NOW - 5200 * MS, end_ns=NOW - 5000 * MS, bytes=4 << 10, count=1))
        return Snapshot(mode="user", taken_ns=NOW, started_ns=NOW - 6000 * MS, wall_time=1_714_000_000.0,
                        buckets=buckets, stacks={YOUNG: RawStack((0x1001,)), OLD: RawStack((0x1002,))})

    def poll(self, timeout_ms):
        pass

    def prune(self):
        pass

    def detach(self):
        pass


def names(key, raw):
    return (Frame(addr=raw.addresses[0], symbol="young_block" if key == YOUNG else "old_block"),)


def trace_stopped(when) -> list:
    """Trace HeldProbe until when(session reports so far) says stop; the final report's rows."""
    recorded = []
    parts = dict(resolve=names, tick=lambda: None)
    request = Request("process", duration_s=3600, interval_s=0.05, pid=7)
    outcome = _run(request, HeldProbe(), parts, recorded.append,
                   lambda cost: "over_budget" if when(len(recorded)) else "", measured=False)
    assert outcome.outcome == "over_budget" and outcome.report is not None
    assert recorded[-1].rows == outcome.report.rows  # the recording holds what the report shows
    return [(row.frames[0].symbol, row.bytes, row.verdict) for row in outcome.report.rows]


def test_a_trace_stopped_before_its_first_interval_keeps_every_allocation_it_saw():
    assert trace_stopped(lambda reports: True) == [("young_block", 64 << 10, "unknown"),
                                                   ("old_block", 4 << 10, "unknown")]


def test_a_trace_stopped_after_an_interval_keeps_its_age_filter():
    assert trace_stopped(lambda reports: reports >= 1) == [("old_block", 4 << 10, "unknown")]
