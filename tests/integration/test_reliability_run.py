"""`leaktrace run` owns its command's lifetime (issue #23.10): it exits with
the command's status, passes SIGTERM and SIGHUP on and still prints the final
report, never leaves the command running untraced (not after --duration, not
when leaktrace is killed), says when the command started processes it does
not trace, and explains, without alarm, the frees glibc makes when a thread
exits."""
import json
import signal
import subprocess
import time

import pytest

from harness import Tracer, assert_within, leaked_under, parse_leaked, run_leaktrace

pytestmark = pytest.mark.privileged


def final_report(stdout: str) -> dict:
    reports = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert reports, f"no JSON report in:\n{stdout[:2000]}"
    return reports[-1]


def gone(pid: int, timeout: float = 10) -> bool:
    """Whether pid stops existing (or is a zombie nobody reaps) within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rpartition(")")[2].split()[0] in ("Z", "X"):
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("script, status", [
    ("exit 3", 3),
    ("kill -ABRT $$", 128 + signal.SIGABRT),
    ("kill -KILL $$", 128 + signal.SIGKILL),
    ("exit 0", 0),
])
def test_run_exits_with_the_commands_status(script, status):
    done = run_leaktrace(["run", "--format", "json", "--", "sh", "-c", script])
    assert done.returncode == status, done.stderr
    assert final_report(done.stdout)["mode"] == "user"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_reaches_the_command_and_the_final_report_is_printed(build, tmp_path, signum):
    out = tmp_path / "reports.json"
    with Tracer(["run", "--format", "json", "-o", out, "--", build("fibonacci.c"), "10"],
                stdin=subprocess.PIPE) as tracer:
        tracer.wait_tracing()
        tracer.proc.stdin.write("go\n")
        tracer.proc.stdin.flush()
        deadline = time.monotonic() + 60  # generous: a loaded CI machine, not a speed check
        while not any(line.startswith("LEAKED") for line in tracer.other_output()):
            assert time.monotonic() < deadline, tracer.describe()
            time.sleep(0.05)
        command_pid = json.loads(out.read_text().splitlines()[-1])["pid"] if out.read_text() else None
        tracer.proc.send_signal(signum)
        code = tracer.wait(60)
    assert code == 128 + signum, tracer.describe()
    report = final_report(out.read_text())
    assert report["targets"][0]["comm"] == "fibonacci"
    assert command_pid is None or gone(command_pid)
    assert f"stopped ({'terminated' if signum == signal.SIGTERM else 'hung up'})" in tracer.stderr


def test_under_nohup_a_hang_up_stops_neither_leaktrace_nor_the_command(build, tmp_path):
    """SIGHUP ignored when leaktrace starts (nohup) stays ignored: the trace
    goes on reporting, and the command, which inherited the same disposition,
    is traced to its end; SIGTERM then stops both with the final report."""
    out = tmp_path / "reports.json"
    with Tracer(["run", "--format", "json", "--interval", 1, "--older-than", 0, "-o", out, "--",
                 build("fibonacci.c"), "10"], stdin=subprocess.PIPE, hangup=signal.SIG_IGN) as tracer:
        tracer.wait_tracing()
        deadline = time.monotonic() + 60  # generous: a loaded CI machine, not a speed check
        while not out.read_text():  # a first report: leaktrace is in its reporting loop
            assert time.monotonic() < deadline and tracer.proc.poll() is None, tracer.describe()
            time.sleep(0.05)
        tracer.proc.send_signal(signal.SIGHUP)
        tracer.proc.stdin.write("go\n")
        tracer.proc.stdin.flush()
        reports_at_hang_up = len(out.read_text().splitlines())
        # A stopping leaktrace prints one final report and exits: two more mean it went on.
        while not (any(line.startswith("LEAKED") for line in tracer.other_output())
                   and len(out.read_text().splitlines()) >= reports_at_hang_up + 2):
            assert time.monotonic() < deadline and tracer.proc.poll() is None, tracer.describe()
            time.sleep(0.05)
        tracer.proc.send_signal(signal.SIGTERM)
        code = tracer.wait(60)
    assert code == 128 + signal.SIGTERM, tracer.describe()
    assert "stopped (terminated)" in tracer.stderr, tracer.describe()
    leaked = parse_leaked(tracer.other_output())["sites"]["fibonacci"]
    assert_within(leaked_under(final_report(out.read_text()), "fibonacci")["bytes"], leaked["bytes"],
                  10, "fibonacci bytes in the final report")


def test_duration_ends_the_command_it_never_runs_untraced(build):
    done = run_leaktrace(["run", "--duration", "1", "--format", "json", "--", "sleep", "1000"])
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    pid = final_report(done.stdout)["pid"]
    assert gone(pid, timeout=1), f"sleep {pid} outlived leaktrace run"


def test_killing_leaktrace_kills_its_command():
    with Tracer(["run", "--format", "json", "--", "sleep", "1000"]) as tracer:
        tracer.wait_tracing()
        pid = int(tracer.stderr.split("tracing PID ")[1].split()[0])
        tracer.proc.kill()
        tracer.proc.wait()
    assert gone(pid), f"sleep {pid} kept running untraced after leaktrace was killed"


def test_a_shell_command_is_reported_as_the_only_process_traced(build):
    """Both children are seen: one that lives a millisecond, one named by its exec."""
    program = build("thread_exits.c")
    done = run_leaktrace(["run", "--format", "json", "--", "sh", "-c", f"{program} 1 1; sleep 0.5; true"])
    assert done.returncode == 0, done.stderr
    report = final_report(done.stdout)
    shell = report["pid"]
    notes = [w for w in report["warnings"] if w.startswith(f"only PID {shell} (sh) is traced")]
    assert len(notes) == 1 and "sleep (PID" in notes[0] and notes[0].count("PID ") == 3, report["warnings"]


def test_glibc_tcache_flush_at_thread_exit_is_counted_and_explained_not_flagged(build):
    threads, sizes = 4, 5
    program = build("thread_exits.c")
    done = run_leaktrace(["run", "--no-mmap", "--format", "json", "--", program, threads, sizes])
    assert done.returncode == 0, done.stderr
    report = final_report(done.stdout)
    # Each exiting thread frees its tcache's blocks again, and the tcache itself.
    assert report["events"]["unknown_frees"] == threads * (sizes + 1), report["events"]
    assert "unknown_frees" not in report["losses"], report["losses"]
    assert any("tcache" in w for w in report["warnings"]), report["warnings"]
    table = run_leaktrace(["run", "--no-mmap", "--", program, threads, sizes])
    assert table.returncode == 0 and "unknown_frees=" in table.stdout, table.stdout
    assert "(!)" not in table.stdout, table.stdout
