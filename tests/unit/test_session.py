"""Session: a recording gets every site, the rendered report its top N; a stop
signal ends the loop, and the final report reads, detaches, then renders."""
from __future__ import annotations

import os
import signal

import pytest

from leaktrace.base.config import ReportConfig, RunConfig
from leaktrace.base.model import Bucket, Frame, RawStack, Snapshot, StackKey
from leaktrace.session import Session

NOW = 50_000_000_000
S = 1_000_000_000


class StaticProbe:
    """A probe whose snapshot holds one bucket per stack, stack i with i KiB."""

    def __init__(self, stacks: int):
        keys = [StackKey(pid=7, stack_id=i) for i in range(1, stacks + 1)]
        self.snap = Snapshot(
            mode="user", taken_ns=NOW, started_ns=NOW - 60 * S, wall_time=1_714_000_000.0,
            buckets=tuple(Bucket(stack=k, start_ns=NOW - 30 * S, end_ns=NOW - 29 * S,
                                 bytes=k.stack_id * 1024, count=1) for k in keys),
            stacks={k: RawStack((0x1000 + k.stack_id,)) for k in keys})

    def snapshot(self, targets, with_allocations=False):
        return self.snap

    def detach(self):
        self.detached = True


def resolve(key, raw):
    return tuple(Frame(addr=a, symbol=f"site_{key.stack_id}") for a in raw.addresses)


def test_recording_holds_every_site_and_the_render_the_top_n():
    rendered, recorded = [], []
    session = Session(probe=StaticProbe(25), report_config=ReportConfig(top=3, older_than_ms=0),
                      run_config=RunConfig(), render=rendered.append, record=recorded.append,
                      resolve=resolve)
    session.report()
    (shown,), (saved,) = rendered, recorded
    assert [r.frames[0].symbol for r in shown.rows] == ["site_25", "site_24", "site_23"]
    assert len(saved.rows) == 25 and saved.rows[:3] == shown.rows
    assert saved.sites_total == shown.sites_total == 25
    assert saved.totals == shown.totals == {"bytes": sum(range(1, 26)) * 1024, "count": 25}


@pytest.mark.parametrize("recording, resolved", [(True, 25), (False, 3)])
def test_each_site_is_symbolized_once_per_interval(recording, resolved):
    """--record symbolizes every site (a recording renders again without the
    process), once: the rendered cut reuses those frames; without it only
    the shown top N are symbolized."""
    calls = []

    def counting(key, raw):
        calls.append(key)
        return resolve(key, raw)

    session = Session(probe=StaticProbe(25), report_config=ReportConfig(top=3, older_than_ms=0),
                      run_config=RunConfig(), render=lambda report: None,
                      record=(lambda report: None) if recording else None, resolve=counting)
    session.report()
    assert len(calls) == len(set(calls)) == resolved


def test_without_a_recording_only_the_top_n_is_built():
    rendered = []
    session = Session(probe=StaticProbe(25), report_config=ReportConfig(top=3, older_than_ms=0),
                      run_config=RunConfig(), render=rendered.append, resolve=resolve)
    session.report()
    assert len(rendered[0].rows) == 3 and rendered[0].sites_total == 25


class SignalledProbe(StaticProbe):
    """Sends itself SIGTERM at the first poll; logs what the session does."""

    def __init__(self, stacks: int, events: list):
        super().__init__(stacks)
        self.events = events

    def snapshot(self, targets, with_allocations=False):
        self.events.append("snapshot")
        return self.snap

    def detach(self):
        self.events.append("detach")

    def poll(self, timeout_ms):
        if not self.events:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would
            self.events.append("signalled")


def signalled_session(events: list, **hooks) -> Session:
    return Session(probe=SignalledProbe(3, events), report_config=ReportConfig(top=3, older_than_ms=0),
                   run_config=RunConfig(interval_s=60), resolve=resolve,
                   render=lambda report: events.append("render"),
                   on_signal=lambda signum: events.append(f"signal {signum}"),
                   finish=lambda reason: events.append(f"finish {reason}"), **hooks)


def test_a_stop_signal_ends_the_loop_and_the_final_report_comes_after_finish_and_detach():
    events = []
    session = signalled_session(events)
    assert session.run() == "terminated"
    assert events == [f"signal {signal.SIGTERM}", "signalled", "finish terminated",
                      "snapshot", "detach", "render"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_final_scan_reads_the_command_before_it_is_ended_still_traced():
    events = []

    def inspect(snapshot):
        events.append("scan")
        return snapshot

    session = signalled_session(events, inspect=inspect)
    assert session.run() == "terminated"
    # No detach here: probe.close() detaches once the command is gone.
    assert events == [f"signal {signal.SIGTERM}", "signalled", "snapshot", "scan", "render",
                      "finish terminated"]


def test_a_stop_signal_between_listen_and_run_still_gets_the_final_report():
    """Commands listen before they print "tracing": a script that signals the
    moment that line appears must not kill leaktrace by the default action."""
    events = []
    session = signalled_session(events)
    session.listen()
    os.kill(os.getpid(), signal.SIGTERM)  # sent before the loop runs
    assert session.run() == "terminated"
    assert events == [f"signal {signal.SIGTERM}", "finish terminated", "snapshot", "detach", "render"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
