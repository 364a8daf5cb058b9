"""`leaktrace triage`: sample /proc over a window and say what is leaking.

No BPF: works without root, with less detail (slab caches and vmalloc
callers need root; what is missing is said in the output).
"""
from __future__ import annotations

import re
import sys

import click

from ..base.errors import UsageError
from ..triage import RENDERERS, assess, read_oom_settings, sample_window, to_data, triage as analyse
from ..triage.verdicts import MIN_SPAN_S

DEFAULT_WINDOW = "10s"
DEFAULT_SAMPLES = 6
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str, option: str = "--window") -> float:
    """'60s', '500ms', '2m', '1h' or a bare number of seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*", text)
    if not match:
        raise UsageError(f"{option} {text!r} is not a duration",
                         hint="write it like 60s, 500ms, 2m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _validate(window_s: float, samples: int) -> None:
    if samples < 2:
        raise UsageError(f"--samples {samples}: growth needs at least 2 samples",
                         hint="use --samples 6 (the default) or more")
    if window_s < MIN_SPAN_S:
        raise UsageError(f"--window {window_s * 1000:.0f}ms is too short to measure growth",
                         hint=f"use at least {MIN_SPAN_S * 1000:.0f}ms; 10s or more for slow leaks")


@click.command()
@click.option("--window", default=DEFAULT_WINDOW, show_default=True, metavar="DURATION",
              help="How long to watch memory (60s, 500ms, 2m).")
@click.option("--samples", type=int, default=DEFAULT_SAMPLES, show_default=True,
              help="Samples taken over the window (the growth rate is fitted over all).")
@click.option("--oom-check", is_flag=True, help="Only check how an OOM event would hurt this host.")
@click.option("--format", "output_format", type=click.Choice(sorted(RENDERERS)), default="table",
              show_default=True, help="Output format.")
def triage(window: str, samples: int, oom_check: bool, output_format: str) -> None:
    """Is memory leaking, in which kind of memory, and what to run next.

    Samples /proc/meminfo, /proc/slabinfo, /proc/vmallocinfo and every
    process's memory over the window, then gives a verdict per category
    (leak, cache or stable), the top growers and the next leaktrace command.
    """
    result = None
    if not oom_check:
        window_s = parse_duration(window)
        _validate(window_s, samples)
        click.echo(f"leaktrace: sampling memory {samples} times over {window_s:g} s ...", err=True)
        result = analyse(sample_window(window_s, samples))
    data = to_data(result, assess(read_oom_settings()))
    RENDERERS[output_format](data, sys.stdout)
