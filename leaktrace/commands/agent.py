"""`leaktrace agent`: run unattended, trace only what grows, export to Prometheus."""
from __future__ import annotations

import click

from ..agent.config import AgentConfig, parse_budget, parse_listen, parse_size
from ..agent.evidence import EvidenceStore
from ..agent.exporter import serve
from ..agent.loop import Agent
from ..agent.watch import TARGET_KINDS
from ..base.console import stderr_line
from ..base.errors import UsageError
from ..probes import features
from .options import DEFAULT_REACH_MAX_MB
from .triage import parse_duration


def say(message: str) -> None:
    stderr_line(f"leaktrace agent: {message}")


def parse_targets(text: str) -> tuple:
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in TARGET_KINDS]
    if unknown or not kinds:
        raise UsageError(f"--targets {text!r}: unknown kind {unknown[0] if unknown else ''!r}",
                         hint="--targets takes " + ", ".join(TARGET_KINDS))
    return kinds


def agent_config(opts: dict) -> AgentConfig:
    """The options, checked, as an AgentConfig (one UsageError line for a bad value)."""
    durations = {name: parse_duration(opts[name], "--" + name.replace("_", "-"))
                 for name in ("period", "window", "trace_for", "interval", "cooldown")}
    config = AgentConfig(
        listen=parse_listen(opts["listen"]), out_dir=opts["out"], budget=parse_budget(opts["budget"]),
        period_s=durations["period"], window_s=durations["window"],
        min_growth=parse_size(opts["min_growth"], "--min-growth"), trace_s=durations["trace_for"],
        interval_s=durations["interval"], cooldown_s=durations["cooldown"],
        sample_rate=opts["sample_rate"], retain=opts["retain"],
        max_out_bytes=parse_size(opts["max_out"], "--max-out"), export_top=opts["export_top"],
        escalate=not opts["no_escalate"], targets=parse_targets(opts["targets"]), cgroup=opts["cgroup"],
        reach_max_bytes=opts["reachability_max_mb"] << 20 if opts["reachability"] else 0,
        duration_s=parse_duration(opts["duration"], "--duration") if opts["duration"] else None)
    for name, value in (("--period", config.period_s), ("--window", config.window_s),
                        ("--trace-for", config.trace_s), ("--interval", config.interval_s)):
        if value <= 0:
            raise UsageError(f"{name} must be more than 0", hint="write it like 10s or 2m")
    return config


@click.command()
@click.option("--listen", default="127.0.0.1:9464", show_default=True, metavar="HOST:PORT",
              help="Serve /metrics here (:9464 for every address).")
@click.option("--out", default=AgentConfig.out_dir, show_default=True, metavar="DIR",
              help="Evidence of each trace: recording, pprof, verdicts, events.jsonl.")
@click.option("--budget", default="2%", show_default=True, metavar="SHARE",
              help="Share of the host's CPU time the probes may use, measured.")
@click.option("--period", default="10s", show_default=True, metavar="DURATION", help="Between two samples of /proc.")
@click.option("--window", default="10m", show_default=True, metavar="DURATION",
              help="Growth is fitted over this long before anything is traced.")
@click.option("--min-growth", default="1MiB", show_default=True, metavar="SIZE",
              help="Growth over the window below this is noise.")
@click.option("--trace-for", default="60s", show_default=True, metavar="DURATION",
              help="How long one escalation traces its target.")
@click.option("--interval", default="5s", show_default=True, metavar="DURATION", help="Between the reports of a trace.")
@click.option("--cooldown", default="30m", show_default=True, metavar="DURATION",
              help="A traced target is not traced again for this long.")
@click.option("--sample-rate", type=click.IntRange(min=0), default=0, show_default=True, metavar="BYTES",
              help="Bytes per sample of a process's first trace (0: every allocation); raised "
                   "after a trace the budget stopped.")
@click.option("--retain", type=click.IntRange(min=1), default=20, show_default=True,
              help="Traces whose evidence is kept in --out.")
@click.option("--max-out", default="256MiB", show_default=True, metavar="SIZE",
              help="Everything kept in --out, at most.")
@click.option("--export-top", type=click.IntRange(min=1, max=1000), default=10, show_default=True,
              help="Processes, cgroups and slab caches exported per metric (the fastest growers).")
@click.option("--targets", default=",".join(TARGET_KINDS), show_default=True, metavar="KIND[,KIND]",
              help="What may be traced when it grows: " + ", ".join(TARGET_KINDS) + ".")
@click.option("--cgroup", default="", metavar="PATH",
              help="Only watch processes whose cgroup v2 path starts with PATH (e.g. /kubepods).")
@click.option("--no-escalate", is_flag=True, help="Only watch and export; never trace.")
@click.option("--reachability", is_flag=True,
              help="End each trace of a process with a scan of its memory for pointers into what it "
                   "still holds: definitely lost, indirectly lost or reachable bytes per site. Off by "
                   "default: the scan stops the process's threads while its memory is copied and costs "
                   "CPU (charged to --budget). Not done for a sampled trace.")
@click.option("--reachability-max-mb", type=click.IntRange(min=1), default=DEFAULT_REACH_MAX_MB,
              show_default=True, metavar="MIB", help="Do not scan a process with more memory to read than this.")
@click.option("--duration", metavar="DURATION", help="Stop after this long (default: until SIGTERM).")
def agent(**opts):
    """Watch every process and slab cache; trace only what grows.

    Samples /proc every --period, fits each process's, cgroup's and slab
    cache's memory over --window, and when one grows persistently traces it
    for --trace-for (attach for a process, kernel for a cache, vmalloc or
    percpu), one at a time, within --budget. Evidence goes to --out, metrics
    to http://HOST:PORT/metrics. Runs until SIGTERM or --duration.
    """
    config = agent_config(opts)
    if config.escalate:
        features.check_privileges()
    store = EvidenceStore(config.out_dir, config.retain, config.max_out_bytes, say)
    store.check()
    runner = Agent(config, store, say)
    server = serve(config.listen, lambda: runner.state)
    host, port = config.listen
    say(f"watching memory every {config.period_s:g} s over {config.window_s:g} s windows; "
        f"metrics on http://{host}:{port}/metrics; evidence in {config.out_dir}")
    try:
        reason = runner.run()
    finally:
        server.shutdown()
    say(f"stopped ({reason})")
