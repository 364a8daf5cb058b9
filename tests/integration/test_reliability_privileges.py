"""Privilege and facility failures say what really failed, in one line, with
the right exit code (issue #23.9): root whose BPF capabilities were dropped,
bpf() blocked by a seccomp filter, a process root may not read, and a tracefs
that cannot be mounted. Each environment is made for real (capsh, a seccomp
filter, a private mount namespace)."""
import shlex
import subprocess

import pytest

from harness import assert_clean_error, leaktrace_command, run_leaktrace

pytestmark = pytest.mark.privileged

# In a private mount namespace: unmount tracefs and debugfs (exit 99 if still
# visible), then drop CAP_SYS_ADMIN so that leaktrace cannot mount them again.
HIDE_TRACEFS = ("umount /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug 2>/dev/null; "
                "[ -e /sys/kernel/tracing/events ] && exit 99; exec capsh --drop=cap_sys_admin -- -c {}")


def leaktrace_line(args) -> str:
    return " ".join(shlex.quote(str(a)) for a in [*leaktrace_command(), *args])


def run_in_shell(command: list) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)




@pytest.mark.parametrize("mode", ["attach", "kernel"])
def test_root_without_bpf_capabilities_gets_the_privileges_message(idle_target, mode):
    args = (["attach", "-p", idle_target.pid] if mode == "attach" else ["kernel"]) + ["--duration", "1"]
    done = run_in_shell(["capsh", "--drop=cap_bpf,cap_perfmon,cap_sys_admin", "--", "-c",
                         leaktrace_line(args)])
    assert_clean_error(done, "CAP_BPF")
    assert done.returncode == 77
    assert "header" not in done.stderr.lower()


def test_bpf_blocked_by_seccomp_gets_the_privileges_message(build, idle_target):
    deny_bpf = build("deny_bpf.c")
    done = run_leaktrace(["attach", "-p", idle_target.pid, "--duration", "1"], prefix=[deny_bpf])
    assert_clean_error(done, "seccomp")
    assert done.returncode == 77


def test_attach_to_pid_1_never_tells_root_to_run_as_root():
    done = run_leaktrace(["attach", "-p", "1", "--duration", "0.5"])
    if done.returncode == 0:
        return  # this machine lets root read PID 1: it was traced for half a second
    assert_clean_error(done, "/proc/1")
    assert done.returncode == 77
    assert "run as root" not in done.stderr and "sudo" not in done.stderr


def test_tracefs_that_cannot_be_mounted_is_one_line(idle_target):
    line = leaktrace_line(["attach", "-p", idle_target.pid, "--duration", "1"])
    done = run_in_shell(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                         HIDE_TRACEFS.format(shlex.quote(line))])
    assert done.returncode != 99, "could not hide tracefs in a private mount namespace"
    assert_clean_error(done, "tracefs")
    assert done.returncode == 69
