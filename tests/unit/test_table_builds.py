"""Unwind tables built in the background (probes/table_builds.py): the worker,
what it hands back, and the report's lines about stacks walked before the
tables arrived. No BPF: the build is a plain function here."""
import os
import threading
import time

from leaktrace.base.errors import TargetError
from leaktrace.probes.table_builds import EarlyWalks, TableBuilds, early_notes
from leaktrace.process.traced_process import TracedProcess
from leaktrace.unwind.spaces import ProcessSpace


def space(pid, complete=True):
    return ProcessSpace(pid, (), (), complete=complete)


def collect(builds, wanted, limit_s=10.0):
    """finished() until it has handed out `wanted` builds (bounded, not timed)."""
    found, deadline = [], time.monotonic() + limit_s
    while len(found) < wanted and time.monotonic() < deadline:
        found += builds.finished()
        time.sleep(0.01)
    return found


def test_a_build_runs_off_the_callers_thread_and_is_handed_out_once():
    threads = []

    def build(process):
        threads.append(threading.current_thread())
        return [space(process.pid)]

    builds = TableBuilds(build)
    process = TracedProcess(os.getpid())
    builds.submit(process)
    assert builds.waiting(process.pid)
    (built,) = collect(builds, 1)
    assert built.space == space(process.pid) and built.process is process
    assert built.version == process.version and built.error is None
    assert threads and threads[0] is not threading.main_thread()
    assert not builds.waiting(process.pid)
    assert builds.finished() == []


def test_a_process_submitted_twice_before_its_build_is_handed_out_is_built_once():
    release, calls = threading.Event(), []

    def build(process):
        calls.append(process.pid)
        release.wait(10)
        return [space(process.pid)]

    builds = TableBuilds(build)
    process = TracedProcess(os.getpid())
    builds.submit(process)
    builds.submit(process)
    release.set()
    assert len(collect(builds, 1)) == 1
    time.sleep(0.05)
    assert calls == [process.pid] and builds.finished() == []


def test_partial_steps_come_out_in_order_and_the_process_waits_until_the_complete_one():
    release = threading.Event()

    def build(process):
        yield space(process.pid, complete=False)
        release.wait(10)
        yield space(process.pid)

    builds = TableBuilds(build)
    process = TracedProcess(os.getpid())
    builds.submit(process)
    (first,) = collect(builds, 1)
    assert not first.space.complete and builds.waiting(process.pid)
    release.set()
    (last,) = collect(builds, 1)
    assert last.space.complete and not builds.waiting(process.pid)


def test_a_process_gone_during_its_build_comes_back_with_the_error():
    def build(process):
        raise TargetError("process 1 is gone")

    builds = TableBuilds(build)
    builds.submit(TracedProcess(os.getpid()))
    (built,) = collect(builds, 1)
    assert built.space is None and "gone" in built.error.message


def test_nothing_is_built_after_stop():
    calls = []
    builds = TableBuilds(lambda process: calls.append(process.pid) or [space(process.pid)])
    builds.stop()
    builds.submit(TracedProcess(os.getpid()))
    assert not builds.waiting(os.getpid()) and calls == []


def test_the_report_counts_the_stacks_walked_before_the_tables_per_process():
    assert early_notes({41: 416, 42: 0}, {}) == [
        "stacks of 416 outstanding allocations of pid 41 were walked with frame pointers only: "
        "they were made while its unwind tables were still loading"]
    assert early_notes({}, {43: 7, 44: 0}) == [
        "the unwind tables of pid 43 are still loading: the stacks of its 7 outstanding allocations "
        "were walked with frame pointers only"]
    assert early_notes({}, {}) == []


def test_many_processes_share_one_line_with_the_sum():
    notes = early_notes({pid: 10 for pid in range(100, 105)}, {})
    assert notes == ["stacks of 50 outstanding allocations of 5 processes were walked with frame pointers "
                     "only: they were made while the unwind tables were still loading"]


def test_a_process_counts_once_its_first_tables_are_written_and_not_when_it_needs_none():
    early = EarlyWalks()
    for pid in (1, 2, 3):
        early.mark(pid)
    early.finish(1, written=True)
    early.finish(2, written=False)  # frame pointers everywhere: its walks are exact
    early.finish(1, written=True)  # a later step
    assert early.loaded == {1} and early.loading == {3}


def test_a_forgotten_build_is_never_handed_out_and_the_next_one_is():
    # `run` loads the tables itself once the loader has mapped the libraries:
    # the build of the maps at exec, finishing later, must not land over them.
    release = threading.Event()

    def build(process):
        release.wait(10)
        return [space(process.pid, complete=False), space(process.pid)]

    builds = TableBuilds(build)
    process = TracedProcess(os.getpid())
    builds.submit(process)
    builds.forget(process.pid)
    release.set()
    deadline = time.monotonic() + 10
    while builds.waiting(process.pid) and time.monotonic() < deadline:
        assert builds.finished() == []
        time.sleep(0.01)
    assert not builds.waiting(process.pid)
    builds.submit(process)
    assert [built.space for built in collect(builds, 2)] == [space(process.pid, complete=False),
                                                             space(process.pid)]
