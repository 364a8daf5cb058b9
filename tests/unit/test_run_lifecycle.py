"""The pieces of `leaktrace run`'s lifecycle that need no BPF: the exit status
it returns, and ForkWatch seeing the processes a command starts (through the
process-events connector as root, through /proc children files otherwise)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from leaktrace.commands.run import Command, exit_status
from leaktrace.process.forks import ForkWatch


def status_of(script: str) -> int:
    pid = os.fork()
    if pid == 0:
        os.execvp("sh", ["sh", "-c", script])
    return os.waitpid(pid, 0)[1]


def test_exit_status_is_the_code_or_128_plus_the_signal():
    assert exit_status(status_of("exit 7")) == 7
    assert exit_status(status_of("exit 0")) == 0
    assert exit_status(status_of("kill -TERM $$")) == 128 + signal.SIGTERM
    assert exit_status(status_of("kill -KILL $$")) == 128 + signal.SIGKILL


def test_fork_watch_names_the_processes_a_command_starts():
    shell = subprocess.Popen(["sh", "-c", "sleep 0.5 & sleep 0.6; wait"])
    watch = ForkWatch(shell.pid)
    try:
        deadline = time.monotonic() + 10
        while len(watch.started) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            watch.poll()
        assert sorted(watch.started.values()) == ["sleep", "sleep"], watch.started
    finally:
        shell.wait()
        watch.close()


def test_a_command_that_started_nothing_has_no_warning():
    shell = subprocess.Popen(["sleep", "0.2"])
    command = Command(shell.pid, "sleep")
    command.forks = ForkWatch(shell.pid)
    try:
        assert command.warnings() == []
    finally:
        shell.wait()
        command.forks.close()
