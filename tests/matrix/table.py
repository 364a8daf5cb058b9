"""The matrix's results as one table (checks x kernels) and its footnotes; pure."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Sequence

from tabulate import tabulate


@dataclass
class KernelRun:
    """What one kernel's guest (or the host) gave back."""
    series: str
    release: str
    how: str  # "kvm", "tcg" or "host": where the checks ran
    headers: str  # "debian" (the kernel's own package) or "fallback"
    results: Dict[str, Dict] = field(default_factory=dict)  # check -> its JSON record
    problem: str = ""  # why checks have no result (boot failed, timed out)
    seconds: float = 0.0
    facts: Dict = field(default_factory=dict)  # kernel_facts.collect() in the guest
    rerun: List[str] = field(default_factory=list)  # checks whose result is from a later run (merge_runs)

    def result(self, check: str) -> Dict:
        return self.results.get(check) or {
            "check": check, "status": "FAIL", "seconds": 0, "warnings": [], "detail": "",
            "summary": self.problem or "no result from the guest"}

    @property
    def failed(self) -> bool:
        return bool(self.problem) or any(r["status"] == "FAIL" for r in self.results.values())


def merge_runs(runs: Sequence[KernelRun]) -> List[KernelRun]:
    """One run per kernel: a later run's checks (a check run again alone, after
    a fix) replace the earlier results, and are listed in `rerun`."""
    merged: Dict[tuple, KernelRun] = {}
    for run in runs:
        key = (run.release, run.how)
        first = merged.setdefault(key, run)
        if first is not run:
            merged[key] = replace(first, results={**first.results, **run.results},
                                  facts={**first.facts, **run.facts}, problem=run.problem or first.problem,
                                  seconds=first.seconds + run.seconds,
                                  rerun=list(dict.fromkeys([*first.rerun, *run.results])))
    return list(merged.values())


def cell(record: Dict) -> str:
    return f"{record['status']} {record['seconds']:.0f}s" if record["seconds"] else record["status"]


def column_title(run: KernelRun) -> str:
    return f"{run.series} ({run.how})"


def render(runs: Sequence[KernelRun], checks: Sequence[str]) -> str:
    """The table, then one line per kernel, then the reasons for every SKIP and FAIL."""
    rows = [[check] + [cell(run.result(check)) for run in runs] for check in checks]
    lines = [tabulate(rows, headers=["check"] + [column_title(r) for r in runs], tablefmt="simple",
                      disable_numparse=True), ""]
    for run in runs:
        lines.append(f"{column_title(run)}: {run.release}, headers {run.headers}, "
                     f"{run.seconds:.0f}s in all" + (f"; {run.problem}" if run.problem else ""))
    notes = footnotes(runs, checks)
    if notes:
        lines += [""] + notes
    return "\n".join(lines)


def footnotes(runs: Sequence[KernelRun], checks: Sequence[str]) -> List[str]:
    notes = []
    for run in runs:
        for check in checks:
            record = run.result(check)
            if record["status"] != "PASS":
                why = record.get("summary") or (record.get("detail", "").strip().splitlines() or [""])[-1]
                notes.append(f"{column_title(run)} {check} {record['status']}: {why[:300]}")
    return notes


def kernel_notes(run: KernelRun, key: str) -> List[str]:
    """The report lines of `key` ("probes" or "warnings") the checks met on this
    kernel, then kernel mode's for every kind (kernel_facts), once each;
    warnings only where they are about the kernel."""
    lines = [line for check in run.results.values() for line in check.get(key, [])]
    lines += run.facts.get("kernel_mode", {}).get("probes" if key == "probes" else "notes", [])
    if key == "warnings":
        lines = [line for line in lines if "this kernel" in line or line.startswith("not traced:")]
    return list(dict.fromkeys(lines))


def render_markdown(runs: Sequence[KernelRun], checks: Sequence[str], measured: str) -> str:
    """The README's "Supported kernels" table: per kernel, the checks that
    passed, how the probes work there and what degrades, in the report's words."""
    lines = [f"Measured {measured} with `scripts/kernel-matrix.sh` ({', '.join(checks)}).", "",
             "| kernel | checks | report header `probes:` | report `warning:` (what degrades) |",
             "|---|---|---|---|"]
    for run in runs:
        passed = sum(run.result(c)["status"] == "PASS" for c in checks)
        failed = [c for c in checks if run.result(c)["status"] != "PASS"]
        verdict = f"{passed}/{len(checks)} pass" + (f" (not: {', '.join(failed)})" if failed else "")
        verdict += f" ({', '.join(run.rerun)} run again alone)" if run.rerun else ""
        cells = [f"{run.series}: `{run.release}` ({run.how})", verdict,
                 "; ".join(kernel_notes(run, "probes")) or "-",
                 "; ".join(kernel_notes(run, "warnings")) or "none"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
