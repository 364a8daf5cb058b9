"""The agent's loop (agent/loop.py, agent/sampler.py): the watch goes on whatever a trace does.

The clock is fake and moves only when the test moves it, one period at a
time, after the sample of the period before has been taken; every real-time
wait below is a bound on how long the test waits for a thread, never a claim
about its speed.
"""
import os
import signal
import threading
import time
from dataclasses import replace

import pytest

from leaktrace.judge import trend
from leaktrace.agent.budget import Budget, ProbeCost
from leaktrace.agent.config import AgentConfig
from leaktrace.agent.escalate import Outcome
from leaktrace.agent.evidence import EvidenceStore
from leaktrace.agent.loop import Agent
from leaktrace.agent.watch import Judged, Key
from leaktrace.base.errors import EnvironmentProblem
from leaktrace.triage.procfs import ProcessMemory, Sample

MiB = 1 << 20
PERIOD, WINDOW = 5.0, 60.0
LEAK_BPS = 100 * 1024
SET_UP_S = 45.0  # bcc compiling and attaching on a loaded machine: the trace calls no check()
TRACE_S = 30.0
MAX_STEPS = 100  # the leak is traced after a window; the test needs about 40 periods
BOUND_S = 30.0  # real seconds a thread may take for one step before the test gives up


class FakeClock:
    """Time that moves only when the test moves it."""

    def __init__(self):
        self.time = 0.0
        self.moved = threading.Condition()

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        with self.moved:
            self.time += seconds
            self.moved.notify_all()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        until, bound = self.time + seconds, time.monotonic() + BOUND_S
        with self.moved:
            while self.time < until and not event.is_set() and time.monotonic() < bound:
                self.moved.wait(0.01)  # polls the event too: nothing notifies its setting here
        return event.is_set()


def leaking_host(clock: FakeClock):
    def read() -> Sample:
        t = clock.now()
        leak = ProcessMemory(1, "app", 0, int(20 * MiB + LEAK_BPS * t), started_s=10.0)
        idle = ProcessMemory(2, "idle", 0, 30 * MiB, started_s=10.0)
        return Sample(1000.0 + t, {"AnonPages": 500 * MiB}, None, None, {1: leak, 2: idle})
    return read


def agent_on(clock: FakeClock, tmp_path, tracer, said: list) -> Agent:
    config = AgentConfig(out_dir=str(tmp_path), period_s=PERIOD, window_s=WINDOW, trace_s=TRACE_S,
                         interval_s=PERIOD, targets=("process",))
    store = EvidenceStore(config.out_dir, config.retain, config.max_out_bytes, said.append)
    return Agent(config, store, said.append, tracer=tracer, clock=clock, read=leaking_host(clock))


def wait_until(condition, bound: float = BOUND_S) -> bool:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_a_trace_that_takes_long_to_set_up_leaves_no_gap_and_the_leak_stays_growing(tmp_path):
    clock, said, over = FakeClock(), [], threading.Event()
    traced, states, stalls = [], [], []

    def tracer(request, record, check):
        began = clock.now()
        traced.append((request.pid, began))
        clock.wait(over, SET_UP_S)  # compile and attach: no check() meanwhile
        while clock.now() < began + SET_UP_S + TRACE_S and not over.is_set():
            if check(ProbeCost()):
                break
            clock.wait(over, PERIOD)
        return Outcome("completed", "duration reached")

    agent = agent_on(clock, tmp_path, tracer, said)

    def done() -> bool:  # a window after the trace ended
        return bool(traced) and clock.now() >= traced[0][1] + SET_UP_S + TRACE_S + WINDOW

    def drive() -> None:  # time passes one period at a time, each period's sample taken
        try:
            taken = 1  # the first sample, as the agent starts
            while wait_until(lambda: agent.state.samples >= taken):
                states.append((clock.now(), agent.state))
                if done() or taken == MAX_STEPS:
                    return
                clock.advance(PERIOD)
                taken += 1
            stalls.append(clock.now())
        finally:
            over.set()
            agent.stop("test over")

    driver = threading.Thread(target=drive)
    driver.start()
    assert agent.run() == "test over"
    driver.join()

    assert stalls == [], f"no sample at t={stalls} (traced: {traced})"
    [(pid, began)] = traced
    assert pid == 1
    leak = [(t, s.active, next(j.trend for j in s.processes if j.key.pid == 1)) for t, s in states]
    since = [(t, active, found) for t, active, found in leak if t >= began]
    assert done() and [t for t, active, _ in since if active]  # judged during the trace and after
    assert {found.state for _, _, found in since} == {trend.GROWING}, since
    assert all(found.rate == pytest.approx(LEAK_BPS, rel=0.01) for _, _, found in since)
    assert states[-1][1].escalations == {("process", "completed"): 1}


def test_a_sample_that_fails_stops_the_agent_with_its_error(tmp_path):
    def broken() -> Sample:
        raise EnvironmentProblem("cannot read /proc/meminfo or uptime: gone", hint="mount procfs")
    config = AgentConfig(out_dir=str(tmp_path), period_s=PERIOD, window_s=WINDOW)
    store = EvidenceStore(config.out_dir, config.retain, config.max_out_bytes, print)
    with pytest.raises(EnvironmentProblem, match="meminfo"):
        Agent(config, store, print, read=broken).run()


def test_sigterm_stops_the_agent_while_it_waits_for_the_next_sample(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    agent = agent_on(FakeClock(), tmp_path, tracer=None, said=[])  # time never moves: no 2nd sample

    def terminate() -> None:
        if wait_until(lambda: agent.state.samples >= 1):
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            agent.stop("no first sample")
    threading.Thread(target=terminate).start()
    assert agent.run() == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_target_whose_attach_cost_a_lot_is_traced_again_only_when_the_credit_covers_it(tmp_path):
    # 1% of 2 CPUs over the window: 1.2 CPU-s of credit at most, a trace starts at 0.6.
    # The target's probes cost 1.2 CPU-s/s and 0.8 CPU-s while they attach (the first ones run
    # while the others attach: no check can stop that), then 0.07 more after the stop (detach).
    clock, said, rate, attaching, detaching = FakeClock(), [], 1.2, 0.8, 0.07
    credit_after = []

    def tracer(request, record, check):
        clock.advance(1.0)  # compile: no probe runs yet
        spent = attaching
        reason = check(ProbeCost(run_time_ns=int(spent * 1e9)))  # attached
        while not reason:
            clock.advance(0.1)
            spent += rate * 0.1
            reason = check(ProbeCost(run_time_ns=int(spent * 1e9)))
        spent += detaching
        return Outcome(reason, cost=ProbeCost(run_time_ns=int(spent * 1e9)), measured=True)

    agent = agent_on(clock, tmp_path, tracer, said)
    agent.budget = Budget(share=0.01, cpus=2, horizon_s=WINDOW, now=0)
    agent.deadline = float("inf")  # as run() sets it with no --duration
    leak = Judged(Key("process", "app", 1), trend.Trend(trend.GROWING, LEAK_BPS, 1.0, 0, WINDOW, 0))
    clock.advance(WINDOW)  # a suspect is judged after a window: the credit is full
    for _ in range(3):
        waited = 0
        while not agent.budget.can_start(clock.now()) and waited < 10 * WINDOW:
            clock.advance(1.0)
            waited += 1
        agent.escalate(leak)
        credit_after.append(agent.budget.credit)
    assert all(credit >= 0 for credit in credit_after), credit_after
    assert agent.budget.overhead(clock.now()) <= 0.01
    assert agent.escalations.counts == {("process", "over_budget"): 3}


def test_the_scan_that_ends_a_trace_is_charged_to_the_budget_and_waited_for_by_the_next(tmp_path):
    clock, said, asked = FakeClock(), [], []

    def tracer(request, record, check):
        asked.append(request)
        check(ProbeCost(run_time_ns=10 ** 8))  # attached: 0.1 CPU-s
        return Outcome("completed", cost=ProbeCost(run_time_ns=2 * 10 ** 8), measured=True, scan_seconds=0.5)

    agent = agent_on(clock, tmp_path, tracer, said)
    agent.config = replace(agent.config, reach_max_bytes=64 * MiB)
    agent.budget = Budget(share=0.01, cpus=2, horizon_s=WINDOW, now=0)
    leak = Judged(Key("process", "app", 1), trend.Trend(trend.GROWING, LEAK_BPS, 1.0, 0, WINDOW, 0))
    clock.advance(WINDOW)
    agent.budget.accrue(clock.now())
    credit = agent.budget.credit
    agent.escalate(leak)
    assert asked[0].reach_max_bytes == 64 * MiB and asked[0].scans
    assert agent.budget.spent == pytest.approx(0.2 + 0.5)  # the probes, then the scan
    assert agent.budget.credit == pytest.approx(credit - 0.7)
    assert agent.budget.unstoppable == pytest.approx(0.7)  # no check could stop the scan either
    assert "then scanning its memory" in said[0]
