"""SIGTERM then SIGKILL during leaktrace's shutdown, and SIGKILL while it
attaches, over and over, never harm the target (issue #23.6): its output stays
that of an untraced run, its code holds no breakpoint byte once the detach is
done, and the kernel log gets no "failed to unregister, leaking uprobe" line
from leaktrace or its detach helper. Run twice: on the system libc (BPF links where the kernel takes them,
perf events otherwise), and on a private copy of libc, where no other tool
holds a uprobe, so the links are used on any kernel that has them."""
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import Tracer
from leaktrace.probes.code_index import function_code
from leaktrace.probes.release import HELPER_NAME
from leaktrace.probes.alloc_functions import HANDLERS

pytestmark = pytest.mark.privileged

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
KILLS = 6
ATTACH_KILLS = 8
PROBE_FDS = ("anon_inode:[perf_event]", "anon_inode:bpf_link")  # what holds a uprobe
CLEAN_WITHIN_S = 30  # the detach helper's work: well under a second here


class KernelLog:
    """The kernel log records written after this object was made (/dev/kmsg)."""

    def __init__(self):
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def new_lines(self) -> list:
        lines = []
        while True:
            try:
                record = os.read(self.fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return lines
            except OSError:  # EPIPE: records were overwritten; go on with the next ones
                continue
            lines.append(record.split(";", 1)[-1].strip())

    def close(self):
        os.close(self.fd)


class Rounds:
    """alloc_rounds, driven one round at a time."""

    def __init__(self, program, env=None):
        self.proc = subprocess.Popen([str(program)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self.number = 0

    def round(self) -> str:
        self.number += 1
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            assert line, f"alloc_rounds died (exit {self.proc.poll()}) in round {self.number}"
            if line.startswith("ROUND "):
                return line.strip()

    def finish(self) -> int:
        self.proc.stdin.close()
        self.proc.stdout.read()
        return self.proc.wait(30)


def libc_of(pid: int):
    """(path, load address) of the libc mapped by pid."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and "libc.so" in fields[5] and fields[2] == "00000000":
                return fields[5], int(fields[0].split("-")[0], 16)
    raise AssertionError(f"no libc mapping in /proc/{pid}/maps")


def breakpoints_left(pid: int) -> list:
    """Hooked libc functions whose code in pid differs from the file's (an int3 left behind)."""
    path, base = libc_of(pid)
    changed = []
    with open(f"/proc/{pid}/mem", "rb") as memory:
        for function in HANDLERS:
            found = function_code(path, function)
            if found is None:
                continue
            vaddr, code = found
            memory.seek(base + vaddr)
            if memory.read(len(code)) != code:
                changed.append(function)
    return changed


@pytest.fixture(params=["system libc", "private libc copy"])
def target_env(request, tmp_path):
    if request.param == "system libc":
        return None
    private = tmp_path / "libc"
    private.mkdir()
    shutil.copy2(LIBC, private / "libc.so.6")
    return {**os.environ, "LD_LIBRARY_PATH": str(private)}


def test_kill_during_shutdown_never_harms_the_target(build, target_env):
    def kill_in_shutdown(tracer, rng):
        tracer.wait_tracing()
        time.sleep(0.3)
        tracer.proc.send_signal(signal.SIGTERM)
        time.sleep(rng.uniform(0.0, 1.0))  # somewhere in the final report and detach
        tracer.proc.kill()

    tracer_pids = kill_rounds(build, target_env, KILLS, kill_in_shutdown)
    assert len(tracer_pids) == KILLS


def test_kill_during_attach_never_harms_the_target(build, target_env):
    """SIGKILL once a random number of probes is in, before `tracing`: the
    probes already attached must come off cleanly all the same."""
    in_attach = []

    def kill_in_attach(tracer, rng):
        wanted = rng.randint(1, 20)  # glibc's family takes ~22 probes
        while probe_fds(tracer.proc.pid) < wanted and tracer.proc.poll() is None \
                and "leaktrace: tracing" not in tracer.stderr:
            time.sleep(0.0005)
        time.sleep(rng.uniform(0.0, 0.003))
        tracer.proc.kill()
        tracer.proc.wait()
        in_attach.append("leaktrace: tracing" not in tracer.stderr)

    kill_rounds(build, target_env, ATTACH_KILLS, kill_in_attach)
    # Most kills must land in the attach window, or this test tests nothing.
    assert sum(in_attach) >= ATTACH_KILLS // 2, in_attach


def probe_fds(pid: int) -> int:
    """How many perf events and BPF links pid and its children (the helper) hold."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            pids = [pid, *map(int, children.read().split())]
    except OSError:
        return 0
    count = 0
    for each in pids:
        try:
            names = os.listdir(f"/proc/{each}/fd")
        except OSError:
            continue
        for name in names:
            try:
                count += os.readlink(f"/proc/{each}/fd/{name}") in PROBE_FDS
            except OSError:
                continue
    return count


def kill_rounds(build, target_env, kills: int, kill) -> list:
    """Trace one alloc_rounds process `kills` times, each trace ended by
    kill(tracer, rng); then check the target as a user would. Returns the
    tracers' pids."""
    program = build("alloc_rounds.c")
    expected = Rounds(program, target_env)
    reference = [expected.round() for _ in range(kills + 1)]
    assert expected.finish() == 0

    log = KernelLog()
    target = Rounds(program, target_env)
    seen, tracer_pids = [target.round()], []
    rng = random.Random(23)
    try:
        for _ in range(kills):
            with Tracer(["attach", "-p", target.proc.pid, "--format", "json"]) as tracer:
                tracer_pids.append(tracer.proc.pid)
                kill(tracer, rng)
                tracer.proc.wait()
            seen.append(target.round())
        deadline = time.monotonic() + CLEAN_WITHIN_S
        while breakpoints_left(target.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = breakpoints_left(target.proc.pid)
        assert seen == reference, "the traced program's output changed"
        assert left == [], f"breakpoint bytes left in {left}"
        assert target.finish() == 0
    finally:
        if target.proc.poll() is None:
            target.proc.kill()
        leaks = [line for line in log.new_lines() if "leaking uprobe" in line and (
            HELPER_NAME.decode() in line or any(f"leaktrace:{pid} " in line for pid in tracer_pids))]
        log.close()
    assert leaks == [], leaks
    with open("/sys/kernel/tracing/uprobe_events") as events:
        ours = [line for line in events if any(f"bcc_{pid}" in line for pid in tracer_pids)]
    assert ours == []
    return tracer_pids


def test_a_normal_stop_leaves_nothing_attached(build, target_env):
    program = build("alloc_rounds.c")
    target = Rounds(program, target_env)
    try:
        target.round()
        with Tracer(["attach", "-p", target.proc.pid, "--format", "json"]) as tracer:
            tracer.wait_tracing()
            target.round()
            assert tracer.stop() and tracer.returncode == 0, tracer.describe()
        assert breakpoints_left(target.proc.pid) == []  # at once: leaktrace waited for the detach
        helpers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == tracer.proc.pid]
        assert helpers == []
        target.round()
    finally:
        target.finish()


def _ppid(proc_dir: Path) -> int:
    try:
        return int((proc_dir / "stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return -1
