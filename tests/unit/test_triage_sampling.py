"""Reading live /proc: this machine's real files, real processes, real races."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leaktrace.base.errors import EnvironmentProblem
from leaktrace.triage import procfs, sample_window
from leaktrace.process.cgroups import container_label, container_with_name
from leaktrace.triage.sampling import read_capture, read_sample, slab_reclaimable

DOCKER_V2 = "0::/system.slice/docker-" + "a" * 64 + ".scope\n"
DOCKER_V1 = "4:memory:/docker/" + "b" * 64 + "\n0::/\n"
POD = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-containerd-" + "c" * 64 + ".scope\n"


def test_meminfo_total_matches_the_kernel_page_count():
    meminfo = procfs.parse_meminfo(Path("/proc/meminfo").read_text())
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert meminfo["MemTotal"] == pytest.approx(pages, rel=0.01)


def test_sample_sees_this_process_with_its_memory():
    sample = read_sample()
    me = sample.processes[os.getpid()]
    assert me.comm.startswith("python") or me.comm == "pytest"
    assert 0 < me.anon <= me.rss
    assert sample.meminfo["MemAvailable"] > 0


def test_window_spans_the_requested_time_and_leaves_out_the_sampler():
    capture = sample_window(0.6, 3)
    times = [s.time_s for s in capture.samples]
    # at least the window (uptime has 10 ms steps); how much longer a loaded machine takes is not asserted
    assert len(times) == 3 and times[-1] - times[0] >= 0.6 - 0.02
    assert all(os.getpid() not in s.processes for s in capture.samples)


def test_processes_exiting_while_sampled_are_skipped():
    # A shell that starts and reaps short-lived processes as fast as it can.
    churn = subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"])
    try:
        capture = sample_window(1.0, 8)
    finally:
        churn.kill()
        churn.wait()
    assert all(churn.pid in s.processes for s in capture.samples)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_unprivileged_read_reports_slabinfo_and_vmallocinfo_missing():
    code = ("from leaktrace.triage import sample_window; c = sample_window(0.3, 2); "
            "print(len(c.samples[0].processes)); print(*c.missing, sep='\\n')")
    result = subprocess.run(
        [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-c", code],
        capture_output=True, text=True, cwd=Path(__file__).parents[2], check=True,
    )
    lines = result.stdout.splitlines()
    assert int(lines[0]) > 1  # other users' processes still read from status
    assert any("/proc/slabinfo" in line for line in lines[1:])
    assert any("/proc/vmallocinfo" in line for line in lines[1:])


def test_missing_proc_is_an_environment_problem(tmp_path):
    with pytest.raises(EnvironmentProblem, match="meminfo"):
        read_sample(tmp_path)
    with pytest.raises(EnvironmentProblem, match="sample-N"):
        read_capture(tmp_path)


def test_slab_reclaimable_flags_from_sysfs_and_from_names(tmp_path):
    (tmp_path / "odd_cache").mkdir()
    (tmp_path / "odd_cache" / "reclaim_account").write_text("1\n")
    flags = slab_reclaimable(["odd_cache", "dentry", "ext4_inode_cache", "kmalloc-32"], tmp_path)
    assert flags == {"odd_cache": True, "dentry": True, "ext4_inode_cache": True, "kmalloc-32": False}


@pytest.mark.parametrize("text, runtime, letter", [
    (DOCKER_V2, "docker", "a"), (DOCKER_V1, "docker", "b"), (POD, "containerd", "c"),
])
def test_container_found_in_cgroup_paths(text, runtime, letter, tmp_path):
    container = container_with_name(text, str(tmp_path))
    assert (container.runtime, container.id) == (runtime, letter * 64)
    assert container_label(container) == f"{runtime}:{letter * 12}"


def test_docker_name_read_from_its_state_directory(tmp_path):
    state = tmp_path / "containers" / ("a" * 64)
    state.mkdir(parents=True)
    (state / "config.v2.json").write_text('{"Name": "/web"}')
    assert container_label(container_with_name(DOCKER_V2, str(tmp_path))) == "web"
    assert container_with_name("0::/user.slice/session-1.scope\n", str(tmp_path)) is None
