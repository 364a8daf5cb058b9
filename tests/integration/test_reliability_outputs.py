"""Outputs never follow what another user planted (issue #23.2), and a bad
output is refused before any probe is attached (#23.9).

An unprivileged user (nobody) plants, in a shared sticky directory like /tmp,
a symlink at the path root will write (-o, --record, report -o, diff -o) or at
the hidden FILE.partial a whole-file format used to write first, each
pointing at a root-only file. Root's leaktrace must refuse the link (one line,
exit 64, nothing attached) or write around it, and the root-only file must
keep its bytes. Reports and recordings are created 0600."""
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import AS_NOBODY, NOBODY, LeakyProcess, Tracer, assert_clean_error, run_leaktrace

pytestmark = pytest.mark.privileged

SECRET = "root only\n"


@pytest.fixture
def shared_dir():
    """A world-writable sticky directory, like /tmp, and a root-only file elsewhere."""
    top = Path(tempfile.mkdtemp(prefix="leaktrace-shared-"))
    shared = top / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    os.chmod(top, 0o755)
    victim = top / "victim"
    victim.write_text(SECRET)
    os.chmod(victim, 0o600)
    yield shared, victim
    shutil.rmtree(top, ignore_errors=True)


def plant_link(link: Path, target: Path) -> None:
    """nobody makes link -> target (it cannot read target; a link needs no access)."""
    subprocess.run([*AS_NOBODY, "ln", "-s", str(target), str(link)], check=True)
    assert link.is_symlink() and link.lstat().st_uid == NOBODY.pw_uid




@pytest.fixture(scope="module")
def recording(build, tmp_path_factory):
    """A real recording (2 intervals of a leaking program), made by root."""
    path = tmp_path_factory.mktemp("rec") / "app.rec"
    with LeakyProcess([build("fibonacci.c"), "20"]) as target:
        with Tracer(["attach", "-p", target.pid, "--format", "json", "--record", path, "1"]) as tracer:
            tracer.wait_tracing()
            target.go()
            target.wait_leaked()
            time.sleep(2.2)
            tracer.stop()
            assert tracer.returncode == 0, tracer.describe()
    return path


@pytest.mark.parametrize("option", [["-o"], ["--record"], ["--format", "pprof", "-o"]])
def test_a_planted_symlink_at_the_output_is_refused_before_attaching(shared_dir, idle_target, option):
    shared, victim = shared_dir
    link = shared / "out"
    plant_link(link, victim)
    done = run_leaktrace(["attach", "-p", idle_target.pid, "--duration", "1", *option, link])
    assert_clean_error(done, "symbolic link")
    assert done.returncode == 64
    assert "tracing" not in done.stderr  # refused before a probe was attached
    assert victim.read_text() == SECRET and link.is_symlink()


def test_a_planted_partial_is_never_written(shared_dir, idle_target):
    shared, victim = shared_dir
    output = shared / "flame.svg"
    plant_link(shared / "flame.svg.partial", victim)
    done = run_leaktrace(["attach", "-p", idle_target.pid, "--duration", "1.5",
                          "--format", "flamegraph", "-o", output, "0.5"])
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == SECRET
    info = output.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
    assert output.read_text().startswith("<?xml") or "<svg" in output.read_text()[:500]
    assert (shared / "flame.svg.partial").is_symlink()
    assert sorted(p.name for p in shared.iterdir()) == ["flame.svg", "flame.svg.partial"]


def test_reports_and_recordings_are_created_private(shared_dir, idle_target):
    shared, _ = shared_dir
    out, rec = shared / "report.json", shared / "app.rec"
    done = run_leaktrace(["attach", "-p", idle_target.pid, "--duration", "1", "--format", "json",
                          "-o", out, "--record", rec])
    assert done.returncode == 0, done.stderr
    for path in (out, rec):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_size > 0, path


@pytest.mark.parametrize("command", ["report", "diff"])
def test_report_and_diff_refuse_a_planted_symlink(shared_dir, recording, command):
    shared, victim = shared_dir
    link = shared / "out.txt"
    plant_link(link, victim)
    args = [command, recording] + ([recording] if command == "diff" else []) + ["-o", link]
    done = run_leaktrace(args)
    assert_clean_error(done, "symbolic link")
    assert victim.read_text() == SECRET and link.is_symlink()
    planted_partial = shared / "fine.txt.partial"
    plant_link(planted_partial, victim)
    done = run_leaktrace(args[:-1] + [shared / "fine.txt"])
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == SECRET and planted_partial.is_symlink()
    assert stat.S_IMODE((shared / "fine.txt").stat().st_mode) == 0o600


def test_a_file_another_user_planted_is_not_appended_to(shared_dir, idle_target):
    """A stream (-o with table/json) appends: never to a file someone else owns."""
    shared, _ = shared_dir
    planted = shared / "report.txt"
    subprocess.run([*AS_NOBODY, "sh", "-c", f"echo mine > {planted}; chmod 666 {planted}"], check=True)
    done = run_leaktrace(["attach", "-p", idle_target.pid, "--duration", "1", "-o", planted])
    assert_clean_error(done, "belongs to user")
    assert planted.read_text() == "mine\n"


@pytest.mark.parametrize("args", [
    ["-o", "/nonexistent-dir/out.json"],
    ["--record", "/nonexistent-dir/app.rec"],
    ["--format", "pprof"],
    ["--format", "plot"],
])
def test_bad_outputs_are_refused_before_the_target_is_touched(idle_target, args):
    done = run_leaktrace(["attach", "-p", idle_target.pid, "--duration", "1", *args])
    assert_clean_error(done)
    assert done.returncode == 64
    assert "tracing" not in done.stderr and "compiling" not in done.stderr


def test_run_refuses_a_bad_output_before_starting_the_command(tmp_path):
    marker = tmp_path / "started"
    done = run_leaktrace(["run", "-o", "/nonexistent-dir/out.json", "--", "touch", marker])
    assert_clean_error(done, "no directory")
    assert done.returncode == 64 and not marker.exists()
