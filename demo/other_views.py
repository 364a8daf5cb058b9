"""What leaktrace's other outputs say about the demo's leak, one line each.

  other_views.py REPORTS FLAMEGRAPH TRIAGE

REPORTS is the JSON lines `leaktrace attach --format json` wrote, FLAMEGRAPH
the SVG `leaktrace report REPORTS --format flamegraph -o` made of them, and
TRIAGE the JSON of `leaktrace triage --format json` run while the app leaked.
Prints the top stack's verdict and growth, where the flame graph is, and what
triage made of the host: whether its next command points at the traced
process, and if not, where that process ranked. Reads files only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from leaktrace.base.units import format_bytes


def final_report(reports: Path) -> Dict:
    lines = [line for line in reports.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])


def verdict_line(report: Dict) -> str:
    if not report["stacks"]:
        return "verdict and growth: no stack reported"
    top = report["stacks"][0]
    # The reason's first clause holds the growth; the rest is in the table above.
    return f"verdict and growth: {top['verdict']}: {top['verdict_reason'].split(';')[0]}"


def flamegraph_line(reports: Path, svg: Path) -> str:
    made = f"leaktrace report {reports.name} --format flamegraph -o {svg.name}"
    if not svg.is_file():
        return f"flame graph: {made} wrote nothing"
    return f"flame graph: {svg} ({format_bytes(svg.stat().st_size)}; {made})"


def _who(grower: Dict) -> str:
    where = f" in container {grower['container']}" if grower["container"] else ""
    return f"{grower['name']} (pid {grower['pid']}){where}"


def triage_line(triage: Dict, pid: int) -> str:
    """Did triage's next command point at pid? Honest either way."""
    head = f"triage ({triage['window_s']:.0f} s of /proc, no BPF): "
    anon = next(v for v in triage["verdicts"] if v["category"] == "user_anon")
    rate = anon["rate"] or 0
    state = (f"user anonymous memory {anon['verdict'].upper()} at "
             f"{'+' if rate >= 0 else ''}{format_bytes(rate)}/s")
    growers: List[Dict] = triage["growers"].get("user_anon", [])
    step: Optional[Dict] = next((s for s in triage["next_steps"] if s["category"] == "user_anon"), None)
    if step is None:
        others = triage["next_steps"][0]["command"] if triage["next_steps"] else "nothing"
        return head + f"{state}; no process singled out, so not pid {pid}; its first next step: {others}"
    line = head + f"{state}; next: {step['command']}  # {step['reason']}"
    rank = next((i for i, g in enumerate(growers, 1) if g["pid"] == pid), None)
    if step["command"] != f"leaktrace attach -p {pid}":
        line += (f"; pid {pid} ranked {rank} of {len(growers)} growers" if rank
                 else f"; pid {pid} was not among its {len(growers)} growers")
    return line


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path)
    parser.add_argument("flamegraph", type=Path)
    parser.add_argument("triage", type=Path)
    args = parser.parse_args(argv)
    report = final_report(args.reports)
    print(verdict_line(report))
    print(flamegraph_line(args.reports, args.flamegraph))
    if args.triage.is_file() and args.triage.stat().st_size:
        print(triage_line(json.loads(args.triage.read_text()), report["targets"][0]["pid"]))
    else:
        print(f"triage: wrote nothing (see its messages above; output {args.triage})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
