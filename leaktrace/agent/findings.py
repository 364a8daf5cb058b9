"""What one escalation found, as plain data: its top sites and its event line.

Contract: pure. top_sites(report, n) names each of the final report's top
sites by its innermost function that is not the allocator (the name pprof
and the plot use too), with its bytes, verdict and growth, and, when the
trace ended with a reachability scan, its bytes and counts per class;
event() builds the one JSON line events.jsonl gets: what grew and how fast,
what was traced and how it ended, what the probes and the scan cost, the
scan's summary, the top sites, and the files written.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

from leaktrace.agent.escalate import Outcome, Request
from leaktrace.agent.watch import Judged
from leaktrace.base.model import REACH_CLASSES, Report
from leaktrace.report.frames import row_title
from leaktrace.report.serialize import reach_classes_to_dict, reach_summary_to_dict

FRAMES_KEPT = 8


@dataclass(frozen=True)
class SiteFinding:
    target: str  # what was traced: "app (pid 12)", "slab dentry"
    function: str
    bytes: int
    count: int
    verdict: str
    growth_bps: float
    pid: int = 0
    comm: str = ""
    cache: str = ""
    frames: Tuple[str, ...] = ()
    reach_bytes: Tuple[int, ...] = ()  # per REACH_CLASSES; () when not scanned
    reach_counts: Tuple[int, ...] = ()

    @property
    def definitely_lost_bytes(self) -> Optional[int]:
        """Bytes nothing points at (the scan's unreferenced class); None when not scanned."""
        return self.reach_bytes[REACH_CLASSES.index("unreferenced")] if self.reach_bytes else None

    def to_dict(self) -> dict:
        """The site as events.jsonl has it: its classes as attach's JSON rows have them."""
        found = asdict(self)
        del found["reach_bytes"], found["reach_counts"]
        found["reachability"] = (reach_classes_to_dict(self.reach_bytes, self.reach_counts)
                                 if self.reach_bytes else None)
        return found


def top_sites(report: Optional[Report], target: str, n: int) -> Tuple[SiteFinding, ...]:
    """The report's top n sites; user-mode rows take their process's name from the target."""
    if report is None:
        return ()
    comms = {t.pid: t.comm for t in report.targets}
    return tuple(
        SiteFinding(target, row_title(row), row.bytes, row.count, row.verdict or "unknown",
                    row.growth_bps, row.pid, row.comm or comms.get(row.pid, ""), row.cache,
                    tuple(f.label() for f in row.frames[:FRAMES_KEPT]),
                    row.reach.bytes if row.reach else (), row.reach.counts if row.reach else ())
        for row in report.rows[:n])


def event(suspect: Judged, request: Request, outcome: Outcome, sites: Tuple[SiteFinding, ...],
          traced_s: float, wall_time: float, files: List[str]) -> dict:
    key, trend, report = suspect.key, suspect.trend, outcome.report
    return {
        "time": round(wall_time, 3),
        "target": {"kind": key.kind, "name": key.name, "pid": key.pid, "container": key.container},
        "growth": {"state": trend.state, "rate_bps": round(trend.rate, 1), "growth_bytes": trend.growth,
                   "window_s": round(trend.span_s, 1), "r2": round(trend.r2, 3), "level_bytes": trend.level},
        "trace": {"mode": request.mode, "kind": request.kind, "pid": request.pid, "cache": request.cache,
                  "sample_rate": request.sample_rate, "planned_s": request.duration_s,
                  "reachability": request.scans,
                  "traced_s": round(traced_s, 1), "outcome": outcome.outcome,
                  "message": outcome.message},
        "cost": {"probe_seconds": round(outcome.cost.seconds(request.mode), 6),
                 "bpf_run_time_ns": outcome.cost.run_time_ns, "bpf_runs": outcome.cost.runs,
                 "measured": outcome.measured, "scan_seconds": round(outcome.scan_seconds, 6)},
        "losses": dict(report.losses) if report else {},
        "reachability": reach_summary_to_dict(report.reach) if report and report.reach else None,
        "sites": [site.to_dict() for site in sites],
        "files": files,
    }
