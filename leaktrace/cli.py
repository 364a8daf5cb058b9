"""leaktrace's command line: a click group, one module per subcommand.

main() turns every LeaktraceError and usage mistake into one line on stderr
and an exit code; it never shows a traceback for a user's mistake or a
missing facility.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Optional, Sequence

import click

from . import __version__
from .base.errors import EX_SOFTWARE, EX_USAGE, LeaktraceError
from .session import describe_error


# Subcommand -> (module under leaktrace.commands, its click command). A
# command's module is imported only when that command runs (or --help lists
# them all): `attach` does not pay for the kernel, agent and triage imports.
COMMANDS = {
    "attach": ("attach", "attach"),
    "run": ("run", "run"),
    "report": ("report", "report"),
    "diff": ("diff", "diff"),
    "kernel": ("kernel", "kernel"),
    "triage": ("triage", "triage"),
    "agent": ("agent", "agent"),
}


class CommandsOnDemand(click.Group):
    def list_commands(self, ctx) -> list:
        return list(COMMANDS)

    def get_command(self, ctx, name: str) -> Optional[click.Command]:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        return getattr(importlib.import_module(f"{__package__}.commands.{module}"), attribute)


@click.group(cls=CommandsOnDemand, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="leaktrace")
def cli():
    """Find who holds memory that is never given back: live, on eBPF.

    \b
    attach   trace the allocations of running processes
    run      start a command with the probes already attached
    report   render a recording (--record FILE) again, in any format
    diff     compare two recordings, or two points of one
    kernel   trace kernel allocations system-wide: slab, pages, percpu, vmalloc
    triage   is this machine leaking, in which kind of memory (no BPF)
    agent    run unattended: watch everything, trace what grows, export metrics
    """


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        result = cli.main(args=list(argv) if argv is not None else None,
                          prog_name="leaktrace", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except LeaktraceError as error:
        click.echo(describe_error(error), err=True)
        return error.exit_code
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "leaktrace"
        click.echo(f"leaktrace: {error.format_message()} (see {command} --help)", err=True)
        return EX_USAGE
    except click.exceptions.Abort:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # a bug: say so in one line, traceback on request
        if os.environ.get("LEAKTRACE_DEBUG"):
            traceback.print_exc()
        click.echo(f"leaktrace: internal error: {type(error).__name__}: {error} "
                   "(rerun with LEAKTRACE_DEBUG=1 and report it)", err=True)
        return EX_SOFTWARE


def entry() -> None:
    sys.exit(main())
