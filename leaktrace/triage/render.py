"""Renders a triage result as a table or JSON.

Contract: to_data(triage, oom_checks) builds plain dicts and lists (the JSON
document, also what the table is drawn from); RENDERERS maps a --format
name to a function (data, out) -> None. Either part may be absent: the
--oom-check run has no triage, and a triage without OOM checks has no "oom".
"""
from __future__ import annotations

import dataclasses
import json
from typing import Callable, Dict, Optional, Sequence, TextIO

from tabulate import tabulate

from leaktrace.triage.oom import OomCheck
from leaktrace.triage.verdicts import Triage
from leaktrace.base.units import format_bytes


def to_data(triage: Optional[Triage], oom_checks: Optional[Sequence[OomCheck]]) -> dict:
    data: dict = {}
    if triage is not None:
        data.update(dataclasses.asdict(triage))
        data["growers"] = {k: [dataclasses.asdict(g) for g in v] for k, v in triage.growers.items()}
    if oom_checks is not None:
        data["oom"] = [dataclasses.asdict(c) for c in oom_checks]
    return data


def human_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _rate(rate: Optional[float]) -> str:
    return "-" if rate is None else f"{'+' if rate >= 0 else ''}{format_bytes(rate)}/s"


def _verdict_table(data: dict, out: TextIO) -> None:
    out.write(f"Memory triage over {data['window_s']:.1f} s ({data['samples']} samples): "
              f"MemTotal {format_bytes(data['mem_total'])}, "
              f"MemAvailable {format_bytes(data['mem_available'])}\n\n")
    rows = [
        (v["label"], format_bytes(v["level"]), _rate(v["rate"]),
         human_duration(v["exhaust_s"]), v["verdict"].upper() if v["verdict"] == "leak" else v["verdict"])
        for v in data["verdicts"]
    ]
    out.write(tabulate(rows, headers=("category", "level", "growth", "exhausts in", "verdict")))
    out.write("\n")


def _grower_row(grower: dict) -> tuple:
    if grower["kind"] == "process":
        who = f"{grower['name']} (pid {grower['pid']})"
        extra = grower["container"] or "-"
    elif grower["kind"] == "slab":
        who, extra = grower["name"], "reclaimable" if grower["reclaimable"] else "unreclaimable"
    else:
        who, extra = grower["name"], "-"
    return who, format_bytes(grower["level"]), _rate(grower["rate"]), extra


def _growers_table(data: dict, out: TextIO) -> None:
    labels = {v["category"]: v["label"] for v in data["verdicts"]}
    for category, growers in data["growers"].items():
        if not growers:
            continue
        out.write(f"\nTop growers in {labels[category]}:\n")
        extra = {"process": "container", "slab": "reclaim"}.get(growers[0]["kind"], "")
        headers = (growers[0]["kind"], "now", "growth") + ((extra,) if extra else ())
        rows = [_grower_row(g)[: len(headers)] for g in growers]
        out.write(tabulate(rows, headers=headers) + "\n")


def _next_table(data: dict, out: TextIO) -> None:
    if not data["next_steps"]:
        if all(v["verdict"] == "stable" for v in data["verdicts"]):
            out.write("\nNothing grew over this window. Slow leaks need a longer --window (e.g. 10m).\n")
        return
    out.write("\nNext:\n")
    for step in data["next_steps"]:
        out.write(f"  {step['command']}\n      # {step['reason']}\n")


def _oom_table(data: dict, out: TextIO) -> None:
    out.write("\nOOM check:\n")
    for check in data["oom"]:
        mark = {"risk": "!!", "ok": "ok", "info": "--"}[check["status"]]
        out.write(f"  {mark} {check['setting']} = {check['value']}: {check['explanation']}\n")


def render_table(data: dict, out: TextIO) -> None:
    if "verdicts" in data:
        _verdict_table(data, out)
        _growers_table(data, out)
        _next_table(data, out)
        for note in data["notes"]:
            out.write(f"\nnote: {note}")
        if data["notes"]:
            out.write("\n")
    if "oom" in data:
        _oom_table(data, out)


def render_json(data: dict, out: TextIO) -> None:
    json.dump(data, out, indent=2)
    out.write("\n")


RENDERERS: Dict[str, Callable[[dict, TextIO], None]] = {
    "table": render_table,
    "json": render_json,
}
