"""/metrics in the Prometheus text format, with the maintained prometheus_client.

Contract: the agent publishes an immutable AgentState after each sample and
escalation; every scrape renders the latest one (AgentCollector), so a scrape
never waits for the agent and never sees half an update. Label cardinality
is bounded by construction, and docs/agent.md lists every family:
processes, cgroups and slab caches: the export_top fastest growers each;
totals: the five meminfo categories; sites: the top SITES_PER_ESCALATION of
the last KEPT_ESCALATIONS escalations; escalations: kinds x outcomes. The
process's own CPU and memory come from prometheus_client's ProcessCollector.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Optional, Tuple

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from leaktrace.agent.findings import SiteFinding
from leaktrace.agent.watch import Judged, Key
from leaktrace.base.errors import UsageError

SITES_PER_ESCALATION = 5
KEPT_ESCALATIONS = 5


@dataclass(frozen=True)
class AgentState:
    budget: float
    totals: Tuple[Judged, ...] = ()
    processes: Tuple[Judged, ...] = ()
    cgroups: Tuple[Judged, ...] = ()
    caches: Tuple[Judged, ...] = ()
    watched: Mapping[str, int] = field(default_factory=dict)  # series per kind
    escalations: Mapping[Tuple[str, str], int] = field(default_factory=dict)  # (kind, outcome)
    active: Optional[Key] = None
    sites: Tuple[SiteFinding, ...] = ()
    probe_seconds: float = 0.0
    overhead: float = 0.0
    samples: int = 0
    sample_seconds: float = 0.0
    write_errors: int = 0
    losses: Mapping[str, int] = field(default_factory=dict)  # summed over escalations


def _gauge(name: str, doc: str, labels=()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"leaktrace_{name}", doc, labels=list(labels))


def _trends(name: str, what: str, judged: Tuple[Judged, ...], labels, values) -> Iterator:
    level = _gauge(f"{name}_bytes", f"{what}: bytes at the last sample", labels)
    rate = _gauge(f"{name}_growth_bytes_per_second",
                  f"{what}: growth fitted over the window; trend is growing, plateau, stable or unknown",
                  list(labels) + ["trend"])
    for item in judged:
        names = [str(v) for v in values(item.key)]
        level.add_metric(names, item.trend.level)
        rate.add_metric(names + [item.trend.state], item.trend.rate)
    yield level
    yield rate


class AgentCollector:
    def __init__(self, state: Callable):
        self.state = state

    def collect(self) -> Iterator:
        s: AgentState = self.state()
        yield from _trends("memory", "meminfo totals", s.totals, ["category"], lambda k: [k.name])
        yield from _trends("process_anon", "anonymous memory of the fastest-growing processes",
                           s.processes, ["pid", "comm", "container"],
                           lambda k: [k.pid, k.name, k.container])
        yield from _trends("cgroup_anon", "anonymous memory of the processes of a cgroup",
                           s.cgroups, ["cgroup", "container"], lambda k: [k.name, k.container])
        yield from _trends("slab_cache", "slab caches", s.caches, ["cache"], lambda k: [k.name])
        yield from self._escalations(s)
        yield from self._sites(s)
        yield from self._own(s)

    @staticmethod
    def _escalations(s: AgentState) -> Iterator:
        done = CounterMetricFamily("leaktrace_escalations", "escalations by target kind and outcome",
                                   labels=["kind", "outcome"])
        for (kind, outcome), count in sorted(s.escalations.items()):
            done.add_metric([kind, outcome], count)
        yield done
        active = _gauge("escalation_active", "1 while a trace runs, labelled with its target",
                        ["kind", "target"])
        if s.active is not None:
            active.add_metric([s.active.kind, s.active.label()], 1)
        yield active

    @staticmethod
    def _sites(s: AgentState) -> Iterator:
        labels = ["target", "pid", "comm", "cache", "function", "verdict"]
        held = _gauge("site_outstanding_bytes", "outstanding bytes of the top sites of recent escalations",
                      labels)
        rate = _gauge("site_growth_bytes_per_second", "growth of those sites while traced", labels)
        lost = _gauge("site_definitely_lost_bytes", "bytes of those sites nothing points at, "
                      "by the reachability scan that ended the trace (agent --reachability)", labels)
        for site in s.sites:
            values = [site.target, str(site.pid), site.comm, site.cache, site.function, site.verdict]
            held.add_metric(values, site.bytes)
            rate.add_metric(values, site.growth_bps)
            if site.definitely_lost_bytes is not None:
                lost.add_metric(values, site.definitely_lost_bytes)
        yield held
        yield rate
        yield lost

    @staticmethod
    def _own(s: AgentState) -> Iterator:
        probe = CounterMetricFamily("leaktrace_agent_probe_seconds",
                                    "CPU time of the agent's probes (BPF run time + probe hits)")
        probe.add_metric([], s.probe_seconds)
        yield probe
        yield GaugeMetricFamily("leaktrace_agent_probe_overhead_ratio",
                                "probe CPU time / (agent uptime x CPUs)", value=s.overhead)
        yield GaugeMetricFamily("leaktrace_agent_budget_ratio", "--budget", value=s.budget)
        samples = CounterMetricFamily("leaktrace_agent_samples", "samples of /proc taken")
        samples.add_metric([], s.samples)
        yield samples
        yield GaugeMetricFamily("leaktrace_agent_sample_duration_seconds",
                                "time the last sample of /proc took", value=s.sample_seconds)
        watched = _gauge("agent_watched_series", "series in the growth model, by kind", ["kind"])
        for kind, count in sorted(s.watched.items()):
            watched.add_metric([kind], count)
        yield watched
        errors = CounterMetricFamily("leaktrace_agent_write_errors", "evidence writes that failed")
        errors.add_metric([], s.write_errors)
        yield errors
        losses = CounterMetricFamily("leaktrace_losses", "loss counters of the traces, summed",
                                     labels=["counter"])
        for counter, count in sorted(s.losses.items()):
            losses.add_metric([counter], count)
        yield losses


def serve(listen: Tuple[str, int], state: Callable) -> object:
    """Start /metrics on a thread; one clear line when the address cannot be bound."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes
    registry.register(AgentCollector(state))
    host, port = listen
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        why = "the port is in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise UsageError(f"--listen {host}:{port}: cannot listen there: {why}",
                         hint="choose another address or port with --listen HOST:PORT") from None
    return server
