"""What attach says while it starts: progress lines on a terminal only, and
the timing breakdown LEAKTRACE_TIMING=1 asks for (no timing is asserted)."""
import os
import pty
import subprocess

import pytest

from harness import LeakyProcess, leaktrace_command, run_leaktrace, TIMEOUT_SCALE

pytestmark = pytest.mark.privileged

# Every step gets its progress line at once, so the test does not depend on speed.
ENV = {**os.environ, "LEAKTRACE_PROGRESS_AFTER_S": "0", "LEAKTRACE_TIMING": "1"}


def attach_on_a_terminal(pid: int) -> str:
    """stderr of `attach -p PID --duration 1` written to a pseudo-terminal."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([*leaktrace_command(), "attach", "-p", str(pid), "--duration", "1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal, env=ENV)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(120 * TIMEOUT_SCALE)
    os.close(controller)
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def test_a_terminal_sees_what_attach_is_doing_and_the_breakdown(build):
    with LeakyProcess([build("fibonacci.c"), "5"]) as target:
        text = attach_on_a_terminal(target.pid)
    lines = text.splitlines()
    tracing = next(i for i, line in enumerate(lines) if line.startswith("leaktrace: tracing PID"))
    before = lines[:tracing]
    for doing in ("reading symbol tables", "compiling the probes", "attaching uprobes"):
        assert f"leaktrace: {doing} ..." in before, text
    breakdown = next(line for line in lines if line.startswith("leaktrace: timing to tracing: "))
    for step in ("symbol tables", "compile", "uprobes"):
        assert f"{step} " in breakdown, breakdown
    assert any(line.startswith("leaktrace: timing of the exit: detach ") for line in lines), text


def test_a_pipe_gets_no_progress_lines(build):
    with LeakyProcess([build("fibonacci.c"), "5"]) as target:
        done = run_leaktrace(["attach", "-p", target.pid, "--duration", "1"], env=ENV)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if line.endswith(" ...")], done.stderr
    assert "leaktrace: timing to tracing: " in done.stderr
