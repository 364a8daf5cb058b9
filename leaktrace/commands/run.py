"""`leaktrace run -- CMD ARGS...`: start a command with the probes already live.

The child asks to be traced (PTRACE_TRACEME) and execs, so the kernel stops it
right after exec, before the dynamic linker or main() run a single
instruction. The parent attaches the probes to that PID (uprobes on a library
take effect when it is mapped), then detaches and the program runs. Nothing
the program allocates is missed, and nothing of leaktrace's own Python child
(between fork and exec) is recorded.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal

import click

from .. import allocator
from ..errors import TargetError, UsageError
from ..model import Target
from ..probes import features
from ..probes.user import UserProbe
from .attach import UserSymbols, open_trace_output, trace_processes
from . import options

PTRACE_TRACEME = 0
PTRACE_DETACH = 17
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def _spawn_stopped(argv) -> int:
    """Fork and exec argv; the child stops at exec under ptrace."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
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


class Child:
    def __init__(self, pid: int):
        self.pid = pid
        self.status = None

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is None


@click.command(context_settings={"ignore_unknown_options": False})
@options.report_options(positional=False)
@options.user_options
@click.argument("command", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
def run(command, **opts):
    """Run CMD with the probes attached before its first instruction.

    Reports every --interval seconds and when CMD exits; Ctrl-C stops both.
    """
    probe = UserProbe(options.probe_config(opts))
    if opts["dump_bpf"]:
        options.dump_bpf(probe.dump())
        return
    options.check_outputs(opts)
    executable = shutil.which(command[0])
    if executable is None:
        raise UsageError(f"command not found: {command[0]}")
    features.check_privileges()
    plan = allocator.discover_for_command(os.path.realpath(executable), dict(os.environ), opts["obj"])
    pid = _spawn_stopped(list(command))
    child = Child(pid)
    released = False
    try:
        probe.attach(plan, pid)
        target = Target(pid=pid, comm=os.path.basename(executable)[:15], exe=executable,
                        allocator=plan.allocator_path, allocator_name=plan.allocator_name)
        open_trace_output(probe, opts)  # the child's first events too
        _release(pid)
        released = True
        trace_processes(probe, [target], opts, child.alive, UserSymbols(lines=opts["lines"]),
                        from_start=True)
    finally:
        if not released:  # attach failed: the child must not run untraced
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        probe.close()
