"""The agent's growth model per process, cgroup, cache and total (agent/watch.py)."""
from leaktrace.judge import trend
from leaktrace.agent.watch import PROCESS, SLAB, TOTAL, Watch, policy_for
from leaktrace.triage.procfs import ProcessMemory, Sample, SlabCache

MiB = 1 << 20
WINDOW, PERIOD = 60.0, 5.0


def sample(t, procs=(), slabs=None, meminfo=None):
    return Sample(1000.0 + t, meminfo or {"AnonPages": 500 * MiB}, slabs, None,
                  {p.pid: p for p in procs})


def proc(pid, anon, comm="app", started=10.0, cgroup="/app.slice", leaktrace=False):
    return ProcessMemory(pid, comm, anon + MiB, int(anon), None, started, leaktrace, cgroup)


def watch_for(seconds, make, cgroup=""):
    watch = Watch(policy_for(WINDOW, MiB, PERIOD), WINDOW, cgroup)
    for step in range(int(seconds / PERIOD) + 1):
        watch.observe(make(step * PERIOD))
    return watch


def leaking(t):  # 100 KiB/s
    return [proc(1, 20 * MiB + 100 * 1024 * t), proc(2, 30 * MiB, comm="idle")]


def test_a_steady_leak_becomes_a_suspect_only_after_a_full_window():
    early = watch_for(WINDOW / 2, lambda t: sample(t, leaking(t)))
    assert early.suspects() == []
    assert {j.trend.state for j in early.judged(PROCESS)} == {trend.UNKNOWN}
    later = watch_for(WINDOW, lambda t: sample(t, leaking(t)))
    [suspect] = later.suspects()
    assert (suspect.key.kind, suspect.key.pid) == (PROCESS, 1)
    assert abs(suspect.trend.rate - 100 * 1024) < 1024


def test_a_start_up_that_plateaus_is_never_a_suspect():
    def starting(t):
        return [proc(1, min(t, 20) * 2 * MiB)]  # +40 MiB in 20 s, then flat
    for seconds in (WINDOW, 2 * WINDOW):
        assert watch_for(seconds, lambda t: sample(t, starting(t))).suspects() == []


def test_the_window_slides_so_an_old_start_up_does_not_hide_a_later_leak():
    def late_leak(t):
        return [proc(1, 40 * MiB if t < 120 else 40 * MiB + 200 * 1024 * (t - 120))]
    watch = watch_for(120 + WINDOW, lambda t: sample(t, late_leak(t)))
    assert [s.key.pid for s in watch.suspects()] == [1]


def test_leaktrace_and_other_cgroups_are_not_watched():
    def mixed(t):
        return [proc(1, 20 * MiB + MiB * t, comm="python3", leaktrace=True),
                proc(2, 20 * MiB + MiB * t, cgroup="/other.slice"),
                proc(3, 20 * MiB + MiB * t, cgroup="/app.slice/worker")]
    watch = watch_for(WINDOW, lambda t: sample(t, mixed(t)), cgroup="/app.slice")
    assert [s.key.pid for s in watch.suspects()] == [3]


def test_a_reused_pid_is_a_new_process_and_an_exited_one_is_forgotten():
    def reused(t):
        return [proc(1, 20 * MiB + MiB * t, started=10.0 if t < 30 else 1000.0 + t)]
    watch = watch_for(WINDOW, lambda t: sample(t, reused(t)))
    assert len([k for k in watch.series if k.kind == PROCESS]) == 1
    assert watch.suspects() == []  # the new process has not been watched for a window
    watch.observe(sample(WINDOW + PERIOD))
    assert [k for k in watch.series if k.kind == PROCESS] == []


def test_a_growing_slab_cache_and_vmalloc_are_suspects_but_not_the_user_total():
    def kernel(t):
        slabs = {"dentry": SlabCache(int(10 * MiB + 50 * 1024 * t), 0, 192),
                 "filp": SlabCache(5 * MiB, 0, 256)}
        meminfo = {"VmallocUsed": int(100 * MiB + 80 * 1024 * t), "AnonPages": int(MiB * 40 * t)}
        return sample(t, slabs=slabs, meminfo=meminfo)
    watch = watch_for(WINDOW, kernel)
    names = [(s.key.kind, s.key.name) for s in watch.suspects()]
    assert names == [(TOTAL, "vmalloc"), (SLAB, "dentry")]
    assert [s.key.name for s in watch.suspects(("slab",))] == ["dentry"]


def test_cgroups_sum_their_processes():
    def two(t):
        return [proc(1, 10 * MiB, cgroup="/a"), proc(2, 10 * MiB + 60 * 1024 * t, cgroup="/a")]
    watch = watch_for(WINDOW, lambda t: sample(t, two(t)))
    [group] = [j for j in watch.judged("cgroup") if j.key.name == "/a"]
    assert group.trend.state == trend.GROWING and group.trend.level == 20 * MiB + 60 * 1024 * 60
