"""`leaktrace run -- CMD ARGS...`: start a command with the probes already live.

The child asks to be traced (PTRACE_TRACEME) and execs, so the kernel stops it
right after exec, before the dynamic linker or main() run a single
instruction. The parent attaches the probes to that PID (uprobes on a library
take effect when it is mapped), lets it run until the dynamic loader has mapped
its libraries (process/loader_stop.py) to load their unwind tables before any
of their code runs, then detaches and the program runs. Nothing
the program allocates is missed, and nothing of leaktrace's own Python child
(between fork and exec) is recorded.

run owns the command's lifetime, as `time` and `strace` do: leaktrace exits
with the command's status (128+N when signal N ended it); SIGTERM and SIGHUP
are passed on to it; when leaktrace stops first (Ctrl-C, --duration, COUNT)
the command is ended (SIGTERM, then SIGKILL) while still traced, and if
leaktrace itself is killed the kernel kills the command (PR_SET_PDEATHSIG).
So the command never runs on untraced, and the final report comes after it is
gone (just before, with --reachability: the scan reads its memory). Processes the command starts are not traced: the report
names them.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import time
from typing import Callable, List, Optional

import click

from ..base import timing
from ..base.errors import TargetError, UsageError
from ..process import loader_stop
from ..process.forks import ForkWatch
from ..base.model import Target
from ..probes import allocator, features
from ..probes.user import UserProbe
from ..symbols.user import UserSymbols
from ..process.traced_process import TracedProcess
from . import options
from .tracing import open_trace_output, trace_processes

PTRACE_TRACEME = 0
PTRACE_DETACH = 17
PR_SET_PDEATHSIG = 1
# After a stop signal was passed on (or Ctrl-C reached the command from the
# terminal): how long the command may take to exit before SIGTERM / SIGKILL.
GRACE_S = {"interrupted": 2.0, "terminated": 5.0, "hung up": 5.0}
TERM_GRACE_S = 5.0
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def _spawn_stopped(argv) -> int:
    """Fork and exec argv; the child stops at exec under ptrace, and dies with leaktrace."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # leaktrace died before the prctl
                os._exit(127)
            _libc.ptrace(PTRACE_TRACEME, 0, None, None)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    if not os.WIFSTOPPED(status):
        raise TargetError(f"{argv[0]} could not be started (exit status {os.waitstatus_to_exitcode(status)})")
    return pid


def _release(pid: int) -> None:
    if _libc.ptrace(PTRACE_DETACH, pid, None, None) != 0:
        raise TargetError(f"could not resume {pid}: {os.strerror(ctypes.get_errno())}")


def exit_status(status: int) -> int:
    """A shell's view of a wait status: the exit code, or 128+N after signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Command:
    """The traced command: its status, the signals passed on to it, its children."""

    def __init__(self, pid: int, comm: str, idle: Callable[[float], None] = time.sleep,
                 followed: Optional[Callable[[int], bool]] = None):
        self.pid, self.comm = pid, comm
        self.followed = followed  # --follow-forks: whether a child it started is traced
        self.idle = idle  # waits while the command ends (the probe's poll keeps --trace going)
        self.status = None
        self.forwarded = 0  # the stop signal passed on, if any
        self.forks: Optional[ForkWatch] = None  # the processes it starts (not traced), once it runs

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is None

    def forward(self, signum: int) -> None:
        """Pass SIGTERM and SIGHUP on; Ctrl-C reaches the command from the terminal itself."""
        if signum != signal.SIGINT and self.alive():
            os.kill(self.pid, signum)
            self.forwarded = signum

    def finish(self, reason: str) -> None:
        """End the command while it is still traced: wait for it after a stop
        signal, then SIGTERM, then SIGKILL."""
        self._wait(GRACE_S.get(reason, 0.0))
        if self.alive() and self.forwarded != signal.SIGTERM:
            os.kill(self.pid, signal.SIGTERM)
            self._wait(TERM_GRACE_S)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self._wait(None)

    def _wait(self, seconds) -> None:
        deadline = None if seconds is None else time.monotonic() + seconds
        while self.alive() and (deadline is None or time.monotonic() < deadline):
            self.idle(0.05)

    def exit_code(self) -> int:
        return exit_status(self.status) if self.status is not None else 0

    def run_until_loaded(self, process: TracedProcess) -> bool:
        """From the exec stop, let the command run until its loader has mapped its
        libraries, stopped again there; False if that point is unknown or it ended."""
        loader = loader_stop.find_loader(process)
        if loader is None:
            return False
        self.status = loader_stop.run_until_loaded(self.pid, loader, self.idle)
        return self.status is None

    def release(self) -> None:
        """Let the command run (its forks are watched from now on)."""
        if self.status is not None:
            return  # it ended before its loader was done: nothing to let go
        self.forks = ForkWatch(self.pid)
        _release(self.pid)

    def watch(self) -> None:
        if self.forks:
            self.forks.poll()

    def warnings(self) -> List[str]:
        self.watch()
        started = {pid: comm for pid, comm in (self.forks.started if self.forks else {}).items()
                   if not (self.followed and self.followed(pid))}
        if not started:
            return []
        names = ", ".join(f"PID {pid}" if comm == "?" else f"{comm} (PID {pid})"
                          for pid, comm in sorted(started.items())[:5])
        more = f" and {len(started) - 5} more" if len(started) > 5 else ""
        if self.followed:
            return [f"processes PID {self.pid} ({self.comm}) started that exec'd another program, "
                    f"{names}{more}, are not traced after their exec (trace one with attach -p PID)"]
        return [f"only PID {self.pid} ({self.comm}) is traced: the processes it started, {names}{more}, "
                "are not, and their allocations are not in this report (trace one with attach -p PID)"]


@click.command(context_settings={"ignore_unknown_options": False})
@options.report_options(positional=False)
@options.user_options
@click.argument("command", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
def run(command, **opts):
    """Run CMD with the probes attached before its first instruction.

    Reports every --interval seconds and when CMD exits. leaktrace exits with
    CMD's status (128+N if signal N ended it) and passes SIGTERM and SIGHUP on
    to it (under nohup both ignore SIGHUP); when leaktrace stops first (Ctrl-C,
    --duration, --count) CMD gets SIGTERM (then SIGKILL), so it never runs untraced. Processes CMD starts are
    not traced; the report names them.
    """
    probe = UserProbe(options.probe_config(opts))
    if opts["dump_bpf"]:
        options.dump_bpf(probe.dump())
        return 0
    settings = options.trace_settings(opts)
    options.check_outputs(settings.output)
    executable = shutil.which(command[0])
    if executable is None:
        raise UsageError(f"command not found: {command[0]}")
    features.check_privileges()
    plan = allocator.discover_for_command(os.path.realpath(executable), dict(os.environ), opts["obj"])
    pid = _spawn_stopped(list(command))
    child = Command(pid, os.path.basename(executable)[:15], idle=lambda s: probe.poll(int(s * 1000)),
                    followed=probe.forks.is_followed if probe.config.follow_forks else None)
    try:
        # After the fork (a child forked beside a compiling thread runs Python
        # before its exec): clang runs while placements and unwind tables are read.
        probe.compile_early()
        process = TracedProcess(pid)
        process.plan = plan
        probe.attach(process)
        target = Target(pid=pid, comm=child.comm, exe=executable,
                        allocator=plan.allocator_path, allocator_name=plan.allocator_name,
                        hooked=probe.hooked(pid))
        open_trace_output(probe, settings)  # the child's first events too
        if probe.unwinder is not None and child.run_until_loaded(process):  # libc & co. mapped only now
            probe.libraries_mapped(process)
        child.release()
        trace_processes(probe, [process], [target], settings, child.alive, UserSymbols(lines=settings.lines),
                        child)
    finally:
        if child.alive():  # attach or the report loop failed: the child must not run untraced
            os.kill(pid, signal.SIGKILL)
            while child.alive():
                time.sleep(0.01)
        probe.close()
        if child.forks:
            child.forks.close()
        timing.report("of the exit")
    return child.exit_code()
