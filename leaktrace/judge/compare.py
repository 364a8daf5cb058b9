"""Pure: two reports -> which stacks grew, shrank, appeared or disappeared.

Stacks are matched by what they mean, not by what the kernel called them:
kind, slab cache, and each frame's function and offset (Frame.key(): or
`[unknown]` and the module's file name), so two runs of one program, with other addresses
(ASLR) and other stack ids, still match. Rows of one report that match the
same signature (one stack in two processes) are summed. Only the rows a
report holds are compared: recordings hold every site, but a `--format json`
file only its top N, where a stack below the cut reads as appeared or
disappeared; to_dict() says how many sites each report had and showed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from leaktrace.base.model import Frame, Report, ReportRow

STATUSES = ("grew", "appeared", "shrank", "disappeared", "same")


def stack_signature(row: ReportRow) -> Tuple:
    return (row.kind, row.cache, tuple(f.key() for f in row.frames))


@dataclass(frozen=True)
class Change:
    status: str
    frames: Tuple[Frame, ...]
    kind: str
    bytes_before: int
    bytes_after: int
    count_before: int
    count_after: int

    @property
    def bytes_delta(self) -> int:
        return self.bytes_after - self.bytes_before

    @property
    def count_delta(self) -> int:
        return self.count_after - self.count_before


def _totals(report: Report) -> Dict[Tuple, Tuple[ReportRow, int, int]]:
    found: Dict[Tuple, Tuple[ReportRow, int, int]] = {}
    for row in report.rows:
        key = stack_signature(row)
        first, nbytes, count = found.get(key, (row, 0, 0))
        found[key] = (first, nbytes + row.bytes, count + row.count)
    return found


def _status(before: Tuple, after: Tuple) -> str:
    if before is None:
        return "appeared"
    if after is None:
        return "disappeared"
    if after[1] > before[1]:
        return "grew"
    return "shrank" if after[1] < before[1] else "same"


def compare(before: Report, after: Report) -> Tuple[Change, ...]:
    """Every stack of either report, largest byte change first."""
    a, b = _totals(before), _totals(after)
    changes: List[Change] = []
    for key in list(a) + [k for k in b if k not in a]:
        old, new = a.get(key), b.get(key)
        row = (new or old)[0]
        changes.append(Change(_status(old, new), row.frames, row.kind,
                              old[1] if old else 0, new[1] if new else 0,
                              old[2] if old else 0, new[2] if new else 0))
    changes.sort(key=lambda c: (-abs(c.bytes_delta), STATUSES.index(c.status)))
    return tuple(changes)


def _side(report: Report, source: str) -> Dict[str, Any]:
    return {"source": source, "timestamp": report.timestamp, "elapsed_s": report.elapsed_s,
            "totals": dict(report.totals), "sites_total": report.sites_total,
            "stacks_shown": len(report.rows)}


def to_dict(changes: Tuple[Change, ...], before: Report, after: Report,
            sources: Tuple[str, str] = ("", "")) -> Dict[str, Any]:
    """The diff as JSON types (documented in docs/formats.md)."""
    return {
        "before": _side(before, sources[0]), "after": _side(after, sources[1]),
        "changes": [{
            "status": c.status, "kind": c.kind,
            "bytes_before": c.bytes_before, "bytes_after": c.bytes_after, "bytes_delta": c.bytes_delta,
            "count_before": c.count_before, "count_after": c.count_after, "count_delta": c.count_delta,
            "frames": [{"symbol": f.symbol, "offset": f.offset, "module": f.module, "file": f.file,
                        "line": f.line} for f in c.frames],
        } for c in changes],
    }
