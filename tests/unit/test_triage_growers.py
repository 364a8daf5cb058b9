"""Who triage ranks: start-up that plateaus, young processes and leaktrace
itself are never a leak (issue: a 5 s window called a starting process a
LEAK at +17.8 MiB/s and ranked leaktrace first)."""
import pytest

from leaktrace.triage import triage
from leaktrace.triage.procfs import Capture, ProcessMemory, Sample, is_leaktrace, parse_start_time

MiB = 1 << 20
BOOT_AGE = 1000.0  # uptime at the first sample


def capture(processes_at, seconds=5.0, samples=6, other_anon=200 * MiB):
    """Samples whose AnonPages is other_anon plus the processes' anon."""
    result = []
    for i in range(samples):
        t = BOOT_AGE + seconds * i / (samples - 1)
        procs = {p.pid: p for p in processes_at(i)}
        anon = other_anon + sum(p.anon for p in procs.values())
        meminfo = {"MemTotal": 8192 * MiB, "MemFree": 4096 * MiB, "MemAvailable": 6000 * MiB,
                   "AnonPages": anon}
        result.append(Sample(t, meminfo, None, None, procs))
    return Capture(tuple(result))


def proc(pid, comm, anon, started_s=10.0, leaktrace=False):
    return ProcessMemory(pid, comm, anon + MiB, anon, None, started_s, leaktrace)


def user(result):
    return next(v for v in result.verdicts if v.category == "user_anon")


def test_a_process_starting_in_the_window_is_not_a_leak_nor_ranked():
    # started 1 s before sampling, +18 MiB/s through the whole 5 s window
    starting = capture(lambda i: [proc(10, "java", 18 * MiB * i, started_s=BOOT_AGE - 1)])
    result = triage(starting)
    assert user(result).verdict == "stable"
    assert result.growers.get("user_anon", ()) == ()
    assert any("java (pid 10)" in n and "too young" in n for n in result.notes)


def test_an_old_process_growing_steadily_is_the_leak():
    leaking = capture(lambda i: [proc(10, "leaky", 4 * MiB * i), proc(11, "idle", 30 * MiB)])
    result = triage(leaking)
    assert user(result).verdict == "leak"
    assert [g.pid for g in result.growers["user_anon"]] == [10]


def test_an_old_process_that_grew_then_held_is_not_a_leak():
    held = [0, 20, 40, 40, 40, 40]
    result = triage(capture(lambda i: [proc(10, "warmup", held[i] * MiB)]))
    assert user(result).verdict == "stable" and "grew, then held" in user(result).note
    assert result.growers.get("user_anon", ()) == ()


def test_leaktrace_itself_is_never_ranked_nor_counted():
    mine = capture(lambda i: [proc(20, "python3", 30 * MiB * i, leaktrace=True),
                              proc(10, "leaky", 2 * MiB * i)])
    result = triage(mine)
    assert [g.pid for g in result.growers["user_anon"]] == [10]
    assert user(result).rate == pytest.approx(2 * MiB)  # leaky's, not leaktrace's 30 MiB/s


def test_leaktrace_command_lines_are_recognised():
    assert is_leaktrace(b"/usr/bin/python3\0/opt/lt/.venv/bin/leaktrace\0agent\0")
    assert is_leaktrace(b"leaktrace\0triage\0")
    assert is_leaktrace(b"python3\0-m\0leaktrace\0attach\0-p\0001\0")
    assert not is_leaktrace(b"python3\0-m\0http.server\0")
    assert not is_leaktrace(b"/usr/bin/vim\0leaktrace.txt\0")
    assert not is_leaktrace(b"")


def test_start_time_is_read_after_the_command_name():
    stat = "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 4500 0 0"
    assert parse_start_time(stat, 100) == 45.0
