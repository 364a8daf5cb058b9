"""Judge what scripts/demo.sh saved: was the fibonacci leak found, at the rate
the app itself says it leaked, and does the fixed app show none?

Input: a results directory holding, for each app run, `<app>.app.log` (the
app's own output: a first line naming the build, then one line per call with
`mono=`, CLOCK_MONOTONIC seconds) and `<app>.reports.jsonl` (the reports of
`leaktrace attach --format json`, whose `taken_ns` is on the same clock).
The app's first line decides what is expected:

  mem-leak      the rank-1 stack is fibonacci <- child; its bytes are within
                TOLERANCE_PCT of 8 KiB x the calls made from the start of
                tracing until the age filter's cut-off (a range: calls made
                while the probes went live, attach_s, may be missed); between the first
                and the last report it grew by 8 KiB x the calls made in
                between, same margin.
  mem-leak-fix  no stack includes fibonacci.

Output: each run's final report as a table and one PASS/FAIL line per check
(with --app, only that app's, so the demo shows each run as soon as it
ends), or with --json one summary document. summary.json always holds every
run found. Exit status 0 when every check shown passes, 1 when one fails, 2
when the results cannot be read. Run it again on saved results at any time:
it reads only files.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from leaktrace.base.errors import LeaktraceError, UsageError
from leaktrace.report.json_report import read_reports
from leaktrace.report.table import TableReporter

BYTES_PER_CALL = 1024 * 8  # 1024 long longs per fibonacci() call
TOLERANCE_PCT = 10
_FIRST_LINE = re.compile(r"^(?P<app>mem-leak(-fix)?): pid \d+, calling fibonacci\(\) "
                         r"(?P<rate>\d+) times a second")
_CALL_LINE = re.compile(r"^mem-leak(-fix)?: call \d+ .* mono=(?P<mono>\d+\.\d+)$")


@dataclass
class AppRun:
    """What the app printed: its build, its rate and when each call happened."""
    app: str
    rate: int
    call_times: List[float]

    def calls_between(self, start: float, end: float) -> int:
        """Calls made in (start, end], monotonic seconds."""
        return bisect_right(self.call_times, end) - bisect_right(self.call_times, start)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Verdict:
    app: str
    expect: str
    checks: List[Check] = field(default_factory=list)
    top_stack: List[str] = field(default_factory=list)
    container: Optional[Dict] = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def read_app_log(path: Path) -> AppRun:
    lines = path.read_text(errors="replace").splitlines()
    first = next((m for m in map(_FIRST_LINE.match, lines) if m), None)
    if first is None:
        raise UsageError(f"{path}: no start line from the demo app",
                         hint="the app did not start; see the log for its error")
    times = sorted(float(m["mono"]) for m in map(_CALL_LINE.match, lines) if m)
    return AppRun(app=first["app"], rate=int(first["rate"]), call_times=times)


def read_report_dicts(path: Path) -> List[Dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    list(read_reports(lines))  # validates every line against the schema
    if not lines:
        raise UsageError(f"{path}: leaktrace wrote no report",
                         hint="see leaktrace's messages above for why it stopped")
    return [json.loads(line) for line in lines]


def symbols(stack: Dict) -> List[str]:
    return [frame.get("symbol") or "[unknown]" for frame in stack.get("frames", [])]


def fibonacci_stacks(report: Dict) -> List[Dict]:
    return [s for s in report["stacks"] if any(n.startswith("fibonacci") for n in symbols(s))]


def reported_until(report: Dict) -> float:
    """Monotonic time before which an allocation was old enough to be counted."""
    return report["taken_ns"] / 1e9 - report["older_than_ms"] / 1000


def within(actual: float, expected: float) -> bool:
    return between(actual, expected, expected)


def between(actual: float, least: float, most: float) -> bool:
    """actual in [least, most], widened by TOLERANCE_PCT on each side."""
    margin = TOLERANCE_PCT / 100
    return most > 0 and least * (1 - margin) <= actual <= most * (1 + margin)


def check_leaky(run: AppRun, reports: List[Dict], verdict: Verdict) -> None:
    first, final = reports[0], reports[-1]
    top = final["stacks"][0] if final["stacks"] else {"frames": [], "bytes": 0}
    names = symbols(top)
    verdict.top_stack = names
    chain = [n.split("+")[0] for n in names]
    found = "fibonacci" in chain and "child" in chain[chain.index("fibonacci"):]
    verdict.checks.append(Check("top stack is fibonacci <- child", found,
                                " <- ".join(names[:4]) or "no stack reported"))
    stacks = fibonacci_stacks(final)
    leaked = sum(s["bytes"] for s in stacks)
    # Probes go live one by one while the tracer starts (attach_s): a call in
    # that window may or may not be traced, every later one must be.
    started = final["taken_ns"] / 1e9 - final["elapsed_s"]
    most = run.calls_between(started, reported_until(final))
    least = run.calls_between(started + final.get("attach_s", 0.0), reported_until(final))
    verdict.checks.append(Check(
        f"leaked bytes = 8 KiB x calls since tracing started (±{TOLERANCE_PCT}%)",
        between(leaked, least * BYTES_PER_CALL, most * BYTES_PER_CALL),
        f"{leaked} bytes under fibonacci, {least}..{most} calls x 8 KiB = "
        f"{least * BYTES_PER_CALL}..{most * BYTES_PER_CALL} (probes went live over "
        f"{final.get('attach_s', 0.0):.2f} s)"))
    if len(reports) < 2:
        verdict.checks.append(Check("growth rate", False, "only one report: trace longer"))
        return
    grown = leaked - sum(s["bytes"] for s in fibonacci_stacks(first))
    window = reported_until(final) - reported_until(first)
    calls = run.calls_between(reported_until(first), reported_until(final))
    verdict.checks.append(Check(
        f"growth = 8 KiB x calls between reports (±{TOLERANCE_PCT}%)",
        within(grown, calls * BYTES_PER_CALL),
        f"+{grown} bytes in {window:.1f} s = {grown / window / 1024:.1f} KiB/s; the app made "
        f"{calls} calls ({calls / window:.1f}/s) = {calls * BYTES_PER_CALL / window / 1024:.1f} KiB/s"))


def check_fixed(reports: List[Dict], verdict: Verdict) -> None:
    final = reports[-1]
    verdict.top_stack = symbols(final["stacks"][0]) if final["stacks"] else []
    leaking = fibonacci_stacks(final)
    verdict.checks.append(Check(
        "no stack includes fibonacci", not leaking,
        f"outstanding: {final['totals']['bytes']} bytes in {final['totals']['count']} allocations"
        + (f"; fibonacci holds {sum(s['bytes'] for s in leaking)} bytes" if leaking else "")))


def judge(results: Path, app: str) -> Verdict:
    run = read_app_log(results / f"{app}.app.log")
    reports = read_report_dicts(results / f"{app}.reports.jsonl")
    verdict = Verdict(app=run.app, expect="clean" if run.app == "mem-leak-fix" else "leak",
                      container=reports[-1]["targets"][0].get("container"))
    if verdict.expect == "leak":
        check_leaky(run, reports, verdict)
    else:
        check_fixed(reports, verdict)
    return verdict


def show(results: Path, verdict: Verdict, out) -> None:
    with open(results / f"{verdict.app}.reports.jsonl") as lines:
        final = list(read_reports(lines))[-1]
    out.write(f"=== {verdict.app}: leaktrace's final report ===\n")
    TableReporter().render(final, out)
    for check in verdict.checks:
        out.write(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}\n")
    out.write("\n")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="directory scripts/demo.sh saved into")
    parser.add_argument("--json", action="store_true", help="print one summary document")
    parser.add_argument("--app", help="show and judge only this app's run")
    args = parser.parse_args(argv)
    apps = sorted(p.name[:-len(".app.log")] for p in args.results.glob("*.app.log"))
    try:
        if not apps:
            raise UsageError(f"{args.results}: no <app>.app.log files",
                             hint="pass the directory scripts/demo.sh printed")
        if args.app and args.app not in apps:
            raise UsageError(f"{args.results}: no {args.app}.app.log",
                             hint=f"apps with results there: {', '.join(apps)}")
        verdicts = [judge(args.results, app) for app in apps]
    except (LeaktraceError, OSError, KeyError, IndexError, ValueError) as e:
        hint = getattr(e, "hint", "") or "were these results saved by scripts/demo.sh?"
        print(f"demo: cannot check {args.results}: {e}\ndemo: {hint}", file=sys.stderr)
        return 2
    summary = {"ok": all(v.ok for v in verdicts),
               "runs": [dict(asdict(v), ok=v.ok) for v in verdicts]}
    (args.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shown = [v for v in verdicts if args.app in (None, v.app)]
    if args.json:
        print(json.dumps(summary))
    else:
        for verdict in shown:
            show(args.results, verdict, sys.stdout)
    return 0 if all(v.ok for v in shown) else 1


if __name__ == "__main__":
    sys.exit(main())
