"""Bad input and broken environments, each fed for real: leaktrace must print
one clear `leaktrace:` line (plus at most a hint), exit non-zero, and never
show a traceback. A target that exits mid-trace is not an error: final
report, exit 0."""
import json
import os
import platform
import subprocess
import sys
import time

import pytest

from harness import (
    OLDER_THAN_MS, REPO, SETTLE_S, LeakyProcess, Tracer, assert_clean_error, describe_stacks,
    leaked_under, run_leaktrace,
)

pytestmark = pytest.mark.privileged




def reaped_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_nonexistent_pid():
    pid = reaped_pid()
    assert not os.path.exists(f"/proc/{pid}")
    assert_clean_error(run_leaktrace(["attach", "-p", pid]), str(pid))


def test_kernel_thread_pid():
    with open("/proc/2/comm") as comm:
        assert comm.read().strip() == "kthreadd"
    assert_clean_error(run_leaktrace(["attach", "-p", "2"]), "kernel")


@pytest.mark.parametrize("options, named", [
    (["--top", "-1"], "--top"),
    (["--older-than", "-1"], "--older-than"),
    (["--min-size", "-5"], "--min-size"),
    (["--min-size", "4096", "--max-size", "16"], "--max-size"),
    (["--sample-rate", "-1"], "--sample-rate"),
    (["--format", "xml"], "--format"),
    (["--duration", "0"], "--duration"),
    (["0"], "interval"),
])
def test_invalid_option_values(idle_target, options, named):
    assert_clean_error(run_leaktrace(["attach", "-p", idle_target.pid, *options]), named)


def test_invalid_pid_value():
    assert_clean_error(run_leaktrace(["attach", "-p", "abc"]), "abc")


def test_target_exiting_mid_trace_gives_a_final_report_and_exit_0(build):
    with LeakyProcess([build("fibonacci.c"), "30"]) as target, Tracer(
            ["attach", "-p", target.pid, "--format", "json", "--older-than", OLDER_THAN_MS]) as tracer:
        tracer.wait_tracing()
        target.go()
        leaked = target.wait_leaked()
        time.sleep(SETTLE_S)
        target.stop()  # closes its stdin: the target exits while traced
        assert tracer.wait(30) == 0, tracer.describe()
    reports = tracer.reports()
    assert reports, "no final report after the target exited\n" + tracer.describe()
    assert "Traceback" not in tracer.stderr
    # What was outstanding when it exited is not lost.
    found = leaked_under(reports[-1], "fibonacci")
    assert found["count"] == leaked["count"], f"{found}\n" + describe_stacks(reports[-1])


def test_not_root(idle_target):
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "HOME": "/tmp"}
    done = run_leaktrace(["attach", "-p", idle_target.pid], env=env, prefix=nobody)
    assert_clean_error(done, "root")


@pytest.fixture(scope="module")
def venv_without_bcc(tmp_path_factory):
    """A venv that sees leaktrace and its Python dependencies but not the
    system's site packages, where bcc lives: the mistake of a user who made
    their venv without --system-site-packages."""
    venv = tmp_path_factory.mktemp("nobcc") / "venv"
    base_python = os.path.join(sys.base_prefix, "bin", "python3")  # the one .venv was made from
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    ours = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "leaktrace_deps.pth").write_text(f"{REPO}\n{ours}\n")
    python = venv / "bin" / "python"
    check = "import leaktrace, click\ntry:\n import bcc\nexcept ImportError:\n print('no bcc')"
    out = subprocess.run([python, "-c", check], capture_output=True, text=True)
    assert out.stdout.strip() == "no bcc", f"precondition: {out.stdout} {out.stderr}"
    return python


def test_bcc_not_importable(idle_target, venv_without_bcc):
    done = run_leaktrace(["attach", "-p", idle_target.pid], python=[str(venv_without_bcc)])
    assert_clean_error(done, "bcc")


def test_no_kernel_headers(idle_target, tmp_path):
    if os.path.exists(f"/lib/modules/{platform.release()}/build"):
        pytest.skip("this machine has headers at /lib/modules/<release>/build: cannot hide them")
    env = {k: v for k, v in os.environ.items() if k != "BCC_KERNEL_SOURCE"}
    env.update(LEAKTRACE_HEADERS_SEARCH="/nonexistent", LEAKTRACE_HEADERS_DIR="/nonexistent",
               LEAKTRACE_CACHE_DIR=str(tmp_path / "cache"))
    done = run_leaktrace(["attach", "-p", idle_target.pid], env=env)
    assert_clean_error(done, "linux-headers")


def test_obj_without_malloc(idle_target):
    done = run_leaktrace(["attach", "-p", idle_target.pid, "--obj", "/bin/true"])
    assert_clean_error(done, "malloc")


def test_target_without_an_allocator(build):
    program = build("no_malloc.c", ["-static", "-nostdlib"])
    target = LeakyProcess([program])
    try:
        assert_clean_error(run_leaktrace(["attach", "-p", target.pid]), "malloc")
    finally:
        target.kill()


def test_run_of_a_missing_command(tmp_path):
    missing = tmp_path / "no-such-program"
    assert_clean_error(run_leaktrace(["run", "--", missing]), "no-such-program")


# In a private mount namespace (the host keeps its mounts), unmount tracefs and
# debugfs, exit 99 if they are still visible, then exec leaktrace.
HIDE_TRACEFS = ("umount /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug "
                "2>/dev/null; [ -e /sys/kernel/tracing/events ] && exit 99; exec \"$@\"")


def test_tracefs_not_mounted_still_traces_or_says_how_to_mount_it(build):
    hide = ["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE_TRACEFS, "sh"]
    with LeakyProcess([build("fibonacci.c")]) as target:
        done = run_leaktrace(["attach", "-p", target.pid, "--duration", "1", "--format", "json"],
                             prefix=hide)
    assert done.returncode != 99, "could not hide tracefs in a private mount namespace"
    if done.returncode == 0:  # leaktrace mounted it, or its probes do not need it
        reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert reports and reports[-1]["pid"] == target.pid, done.stdout[:500] + done.stderr
    else:
        assert_clean_error(done, "tracefs")
