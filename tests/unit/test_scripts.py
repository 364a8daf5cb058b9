"""The demo's scripts and files, checked without root: shellcheck on every
shell script, `vagrant validate` on the Vagrantfile, the Dockerfile's pins,
the demo app's output, demo/check_report.py on reports captured from a real
run (tests/data/demo/docker: scripts/demo.sh under Docker on this machine),
and scripts/demo.sh's option errors.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CAPTURED = REPO / "tests" / "data" / "demo" / "docker"
SHELL_SCRIPTS = sorted([*REPO.glob("scripts/*.sh"), *REPO.glob("deploy/*.sh"), *REPO.glob("tests/matrix/*.sh"),
                        REPO / "demo" / "lib.sh", *REPO.glob("vagrant/*.sh")])
CALL_LINE = re.compile(r"^(mem-leak(-fix)?): call (\d+) fibonacci\((\d+)\) = (\d+), "
                       r"leaked (\d+) KiB mono=(\d+\.\d+)$")


def require(tool: str) -> str:
    """The tool's path; CI installs it (scripts/setup.sh --test), so it must be there."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing under CI: scripts/setup.sh --test installs it")
        pytest.skip(f"{tool} is not installed (scripts/setup.sh --test installs it)")
    return path


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck_passes(script):
    done = subprocess.run([require("shellcheck"), "-x", str(script)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def validate_vagrantfile(tmp_path, *args, **env_vars):
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant.d"), VAGRANT_CHECKPOINT_DISABLE="1",
               **env_vars)
    return subprocess.run([require("vagrant"), "validate", *args], cwd=REPO / "vagrant",
                          capture_output=True, text=True, env=env, timeout=120)


def test_vagrantfile_validates_and_pins_an_ubuntu_2404_box(tmp_path):
    # VirtualBox is not installed here: validate everything but provider blocks.
    done = validate_vagrantfile(tmp_path, "--ignore-provider")
    assert done.returncode == 0, done.stdout + done.stderr
    text = (REPO / "vagrant" / "Vagrantfile").read_text()
    assert re.search(r'DEFAULT_BOX = "[\w-]+/ubuntu-24\.04"', text), "box is not Ubuntu 24.04"
    assert re.search(r'BOX == DEFAULT_BOX \? "\d[\d.]+"', text), "box version is not pinned"
    assert 'provider "virtualbox"' in text and 'provider "libvirt"' in text
    assert re.search(r'synced_folder "\.\.", "/vagrant"', text)


@pytest.mark.parametrize("driver", ["kvm", "qemu"])
def test_vagrantfile_validates_for_libvirt_with_the_locally_built_box(tmp_path, driver):
    # The libvirt block too: vagrant-libvirt rejects settings it does not have
    # (no daemon needed). With build-box.sh's unversioned box, as booted here.
    require("vagrant")
    if subprocess.run(["dpkg-query", "-W", "vagrant-libvirt"], capture_output=True).returncode:
        if os.environ.get("CI"):
            pytest.fail("vagrant-libvirt is missing under CI: scripts/setup.sh --test installs it")
        pytest.skip("vagrant-libvirt is not installed (scripts/setup.sh --test installs it)")
    done = validate_vagrantfile(tmp_path, LEAKTRACE_BOX="leaktrace/debian-12",
                                LEAKTRACE_LIBVIRT_DRIVER=driver)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_multi_stage_with_digest_pinned_bases():
    text = (REPO / "demo" / "Dockerfile").read_text()
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    stages = re.findall(r"^FROM \$\{(\w+)\} AS ([\w-]+)$", text, re.M)
    assert [name for _, name in stages] == ["build", "mem-leak", "mem-leak-fix"]
    for arg, _ in stages:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", defaults[arg]), defaults[arg]
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (REPO / "demo" / source).exists(), f"COPY {source}: not in the build context demo/"
    assert text.count('ENTRYPOINT ["/app"]') == 2


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-app")
    done = subprocess.run(["make", "-s", "-C", str(REPO / "demo" / "app"), f"OUT={out}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def run_app(binary: Path, rate: int, seconds: float):
    """The app's lines through a pipe, and when the first call line arrived."""
    proc = subprocess.Popen([str(binary), str(rate)], stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    first_line = proc.stdout.readline()
    proc.stdout.readline()  # call 1: arrives while the app runs, so stdout is unbuffered
    first_call_after = time.monotonic() - started
    time.sleep(seconds)
    proc.terminate()
    rest = proc.communicate()[0]
    return first_line, [CALL_LINE.match(l) for l in rest.splitlines() if l], first_call_after


def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def test_leaky_app_leaks_8_kib_per_call_at_a_steady_rate_without_overflow(apps):
    first, calls, first_call_after = run_app(apps / "mem-leak", rate=200, seconds=1.5)
    assert first_call_after < 1, "the first call line was held in a buffer"
    assert first.startswith("mem-leak: pid ") and "200 times a second" in first
    assert all(calls[:-1]), "a call line does not match the documented format"
    calls = [m for m in calls if m]
    assert len(calls) > 94, "too few calls to wrap past fibonacci(93)"
    for match in calls:
        call, n, value, kib = (int(match[i]) for i in (3, 4, 5, 6))
        assert n == call % 94 and value == fibonacci(n), match[0]
        assert kib == 8 * call, match[0]
    times = [float(m[7]) for m in calls]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 180 <= rate <= 220, f"{rate:.1f} calls/s, asked for 200"


def test_fixed_app_reports_nothing_leaked(apps):
    first, calls, _ = run_app(apps / "mem-leak-fix", rate=100, seconds=0.5)
    assert first.startswith("mem-leak-fix: ") and "freeing each table" in first
    calls = [m for m in calls if m]
    assert calls and all(m[1] == "mem-leak-fix" and m[6] == "0" for m in calls)


def test_app_rejects_a_bad_rate(apps):
    done = subprocess.run([str(apps / "mem-leak"), "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr


# ---- demo/check_report.py on captured results ----------------------------------------------


def check(results: Path, *args):
    return subprocess.run([sys.executable, str(REPO / "demo" / "check_report.py"), str(results),
                           *args], capture_output=True, text=True)


def results_from(tmp_path: Path, **files) -> Path:
    """A results dir whose <app>.<kind> files are copied from the captured ones."""
    for target, source in files.items():
        shutil.copy(CAPTURED / source, tmp_path / target.replace("__", "."))
    return tmp_path


def test_captured_run_passes_every_check(tmp_path):
    results = results_from(tmp_path, **{
        f"{app}__{kind}": f"{app}.{kind}" for app in ("mem-leak", "mem-leak-fix")
        for kind in ("app.log", "reports.jsonl")})
    done = check(results)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout
    assert re.search(r"fibonacci\+0x[0-9a-f]+ \[app\]\n\s+child\+0x[0-9a-f]+ \[app\]", done.stdout)
    summary = json.loads((results / "summary.json").read_text())
    leak, fixed = sorted(summary["runs"], key=lambda r: r["app"])
    assert summary["ok"] and leak["expect"] == "leak" and fixed["expect"] == "clean"
    assert leak["top_stack"][:2] == ["fibonacci", "child"]
    assert leak["container"]["runtime"] == "docker"


def test_one_app_is_shown_and_judged_while_the_summary_holds_every_run(tmp_path):
    results = results_from(tmp_path, **{
        "mem-leak__app.log": "mem-leak.app.log", "mem-leak__reports.jsonl": "mem-leak.reports.jsonl",
        # the fixed app's run "found a leak": failing, but not the one asked for
        "mem-leak-fix__app.log": "mem-leak-fix.app.log",
        "mem-leak-fix__reports.jsonl": "mem-leak.reports.jsonl"})
    done = check(results, "--app", "mem-leak")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "=== mem-leak: leaktrace's final report ===" in done.stdout
    assert "mem-leak-fix" not in done.stdout and "FAIL" not in done.stdout
    summary = json.loads((results / "summary.json").read_text())
    assert not summary["ok"] and len(summary["runs"]) == 2
    assert check(results, "--app", "mem-leak-fix").returncode == 1
    missing = check(results, "--app", "nosuch")
    assert missing.returncode == 2 and "no nosuch.app.log" in missing.stderr


def test_leaky_app_whose_reports_show_no_leak_fails(tmp_path):
    results = results_from(tmp_path, **{"mem-leak__app.log": "mem-leak.app.log",
                                        "mem-leak__reports.jsonl": "mem-leak-fix.reports.jsonl"})
    done = check(results, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    checks = json.loads(done.stdout)["runs"][0]["checks"]
    assert not checks[0]["ok"] and checks[0]["name"] == "top stack is fibonacci <- child"


def test_fixed_app_whose_reports_show_a_leak_fails(tmp_path):
    results = results_from(tmp_path, **{"mem-leak-fix__app.log": "mem-leak-fix.app.log",
                                        "mem-leak-fix__reports.jsonl": "mem-leak.reports.jsonl"})
    done = check(results)
    assert done.returncode == 1
    assert re.search(r"^FAIL  no stack includes fibonacci: .*fibonacci holds \d+ bytes", done.stdout, re.M)


def test_wrong_byte_counts_fail_the_rate_checks(tmp_path):
    results = results_from(tmp_path, **{"mem-leak__app.log": "mem-leak.app.log"})
    lines = (CAPTURED / "mem-leak.reports.jsonl").read_text().splitlines()
    # Half the bytes in every report: as if each call leaked 4 KiB.
    halved = [re.sub(r'"bytes":(\d+)', lambda m: f'"bytes":{int(m[1]) // 2}', l) for l in lines]
    (results / "mem-leak.reports.jsonl").write_text("\n".join(halved) + "\n")
    done = check(results)
    assert done.returncode == 1
    assert len(re.findall(r"^FAIL  (leaked bytes|growth) = 8 KiB", done.stdout, re.M)) == 2


def test_unreadable_results_are_one_clean_error(tmp_path):
    (tmp_path / "mem-leak.app.log").write_text("nothing from the app\n")
    done = check(tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("demo: cannot check") and len(done.stderr.splitlines()) == 2


# ---- scripts/demo.sh option errors (checked before anything runs) --------------------------


@pytest.mark.parametrize("args, message", [
    (["--seconds", "3"], "--seconds takes a whole number >= 10"),
    (["--rate", "x"], "--rate takes a whole number >= 1"),
    (["--bogus"], "unknown option --bogus"),
])
def test_demo_rejects_bad_options(args, message):
    done = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
