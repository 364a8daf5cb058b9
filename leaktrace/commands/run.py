"""`leaktrace run -- CMD ARGS...`: start a command with the probes already live.

The child is forked and waits on a pipe; the parent attaches the probes to
the child's PID (uprobes follow the task across exec), then lets it exec. So
even the first allocation of main() is seen.
"""
from __future__ import annotations

import os
import shutil

import click

from .. import allocator
from ..errors import UsageError
from ..model import Target
from ..probes import features
from ..probes.user import UserProbe
from .attach import UserSymbols, trace_processes
from . import options


def _spawn_paused(argv) -> tuple:
    """Fork a child that execs argv once the returned fd is closed."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(write_fd)
        os.read(read_fd, 1)  # returns b"" when the parent closes its end
        os.close(read_fd)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    os.close(read_fd)
    return pid, write_fd


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
    executable = shutil.which(command[0])
    if executable is None:
        raise UsageError(f"command not found: {command[0]}")
    features.check_privileges()
    plan = allocator.discover_for_command(os.path.realpath(executable), dict(os.environ), opts["obj"])
    pid, release_fd = _spawn_paused(list(command))
    child = Child(pid)
    try:
        probe.attach(plan, pid)
        target = Target(pid=pid, comm=os.path.basename(executable)[:15], exe=executable,
                        allocator=plan.allocator_path, allocator_name=plan.allocator_name)
        os.close(release_fd)
        release_fd = -1
        trace_processes(probe, [target], opts, child.alive, UserSymbols(lines=opts["lines"]))
    finally:
        if release_fd >= 0:  # attach failed: the child must not run untraced
            os.kill(pid, 9)
            os.close(release_fd)
        if child.alive():
            child.alive()
        probe.close()
