"""Report <-> plain dict, in the stable JSON schema of docs/json-schema.md.

report_to_dict() gives only JSON types (dict, list, str, int, float, bool,
None); report_from_dict() rebuilds the exact Report, so a saved report can be
rendered again or compared after the traced process is gone. Input that is
not a report of a schema this version understands becomes a UsageError.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from leaktrace.base.errors import UsageError
from leaktrace.base.model import (
    AGE_THRESHOLDS_S,
    REACH_CLASSES,
    Allocation,
    Container,
    ContentSample,
    KernelPointer,
    Frame,
    ReachSummary,
    Report,
    ReportRow,
    RowContents,
    RowReach,
    StackKey,
    Target,
)
from leaktrace.judge.reach.content import ascii_text

SCHEMA_VERSION = 1
AGE_KEYS = tuple(f"{t}s" for t in AGE_THRESHOLDS_S)
_HINT = "pass a file written by `leaktrace --format json` (one report per line)"


def report_to_dict(report: Report) -> Dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "mode": report.mode,
        "pid": report.targets[0].pid if report.targets else None,
        "targets": [_target_to_dict(t) for t in report.targets],
        "timestamp": report.timestamp,
        "elapsed_s": report.elapsed_s,
        "attach_s": report.attach_s,
        "taken_ns": report.taken_ns,
        "group_by": report.group_by,
        "older_than_ms": report.older_than_ms,
        "sample_rate": report.sample_rate,
        "sites_total": report.sites_total,
        "totals": dict(report.totals),
        "events": dict(report.events),
        "losses": dict(report.losses),
        "warnings": list(report.warnings),
        "probes": list(report.probes),
        "stacks": [_row_to_dict(r) for r in report.rows],
        "allocations": [_allocation_to_dict(a) for a in report.allocations],
        "reachability": reach_summary_to_dict(report.reach) if report.reach else None,
    }


def report_from_dict(d: Any) -> Report:
    doc = _Fields(d, "report")
    schema = doc.get_int("schema")
    if schema != SCHEMA_VERSION:
        raise UsageError(
            f"report schema {schema} is not supported (this leaktrace reads schema {SCHEMA_VERSION})",
            hint="use the leaktrace version that wrote the report",
        )
    return Report(
        mode=doc.get_str("mode"),
        timestamp=doc.get_float("timestamp"),
        elapsed_s=doc.get_float("elapsed_s"),
        taken_ns=doc.get_int("taken_ns"),
        targets=tuple(_target_from_dict(t) for t in doc.get_list("targets")),
        totals=doc.get_counters("totals"),
        events=doc.get_counters("events"),
        losses=doc.get_counters("losses"),
        rows=tuple(_row_from_dict(r) for r in doc.get_list("stacks")),
        allocations=tuple(_allocation_from_dict(a) for a in doc.get_list("allocations")),
        warnings=tuple(_warning(w) for w in doc.get_list("warnings")),
        probes=tuple(_warning(p) for p in (doc.get_list("probes") if "probes" in d else ())),
        group_by=doc.get_str("group_by"),
        sample_rate=doc.get_int("sample_rate"),
        older_than_ms=doc.get_int("older_than_ms"),
        sites_total=doc.get_int("sites_total"),
        # Reachability was added to schema 1 later: absent in older files.
        reach=_summary_from_dict(doc.get_object("reachability"))
        if doc.d.get("reachability") is not None else None,
        attach_s=doc.get_float("attach_s") if "attach_s" in doc.d else 0.0,  # added later
    )


def _warning(text: Any) -> str:
    return _Fields({"text": text}, "warning").get_str("text")


def _target_to_dict(t: Target) -> Dict[str, Any]:
    container = None
    if t.container:
        c = t.container
        container = {"runtime": c.runtime, "id": c.id, "name": c.name, "image": c.image}
    return {"pid": t.pid, "comm": t.comm, "exe": t.exe, "allocator": t.allocator,
            "allocator_name": t.allocator_name, "container": container,
            "hooked": {obj: list(symbols) for obj, symbols in t.hooked}, "forked_from": t.forked_from}


def _target_from_dict(d: Any) -> Target:
    f = _Fields(d, "target")
    c = f.get_optional("container", dict)
    container = None
    if c is not None:
        cf = _Fields(c, "container")
        container = Container(runtime=cf.get_str("runtime"), id=cf.get_str("id"),
                              name=cf.get_str("name"), image=cf.get_str("image"))
    return Target(pid=f.get_int("pid"), comm=f.get_str("comm"), exe=f.get_str("exe"),
                  allocator=f.get_str("allocator"), allocator_name=f.get_str("allocator_name"),
                  container=container, hooked=_hooked_from_dict(f.get_optional("hooked", dict)),
                  forked_from=f.get_int("forked_from") if "forked_from" in d else 0)


def _hooked_from_dict(hooked: Optional[Dict[str, Any]]) -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    """{object: [symbols]}; absent in reports older than the field."""
    pairs = []
    for obj, symbols in (hooked or {}).items():
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            _Fields._fail(f"target hooked[{_short(obj)}] is {_short(symbols)}, expected a list of symbols")
        pairs.append((str(obj), tuple(symbols)))
    return tuple(pairs)


def _row_to_dict(r: ReportRow) -> Dict[str, Any]:
    return {
        "rank": r.rank, "bytes": r.bytes, "count": r.count,
        "avg_size": r.bytes // r.count if r.count else 0,
        "oldest_s": r.oldest_s, "kind": r.kind, "pid": r.pid, "comm": r.comm,
        "cache": r.cache, "cgroup": r.cgroup,
        "bytes_older": dict(zip(AGE_KEYS, r.bytes_older)),
        "estimated": r.estimated,
        "frames": [_frame_to_dict(fr) for fr in r.frames],
        "more_stacks": [[_frame_to_dict(fr) for fr in stack] for stack in r.more_stacks],
        "history": list(r.history), "growth_bps": r.growth_bps,
        "verdict": r.verdict, "verdict_reason": r.verdict_reason,
        "reachability": _row_reach_to_dict(r.reach) if r.reach else None,
        "contents": _contents_to_dict(r.contents) if r.contents else None,
        "uncertain_bytes": r.uncertain_bytes, "silent_frees": r.silent_frees,
    }


def _row_from_dict(d: Any) -> ReportRow:
    f = _Fields(d, "stack")
    older = f.get_counters("bytes_older")
    return ReportRow(
        rank=f.get_int("rank"), bytes=f.get_int("bytes"), count=f.get_int("count"),
        oldest_s=f.get_float("oldest_s"), kind=f.get_str("kind"), pid=f.get_int("pid"),
        comm=f.get_str("comm"), cache=f.get_str("cache"), cgroup=f.get_str("cgroup"),
        bytes_older=tuple(older[k] for k in AGE_KEYS if k in older),
        estimated=f.get_bool("estimated"),
        frames=tuple(_frame_from_dict(fr) for fr in f.get_list("frames")),
        more_stacks=tuple(tuple(_frame_from_dict(fr) for fr in stack)
                          for stack in (f.get_list("more_stacks") if "more_stacks" in f.d else ())),
        # Growth keys were added to schema 1 later: absent in older files.
        history=tuple(f.get_ints("history")) if "history" in f.d else (),
        growth_bps=f.get_float("growth_bps") if "growth_bps" in f.d else 0.0,
        verdict=f.get_str("verdict") if "verdict" in f.d else "",
        verdict_reason=f.get_str("verdict_reason") if "verdict_reason" in f.d else "",
        reach=_row_reach_from_dict(f.get_object("reachability"))
        if f.d.get("reachability") is not None else None,
        contents=_contents_from_dict(f.get_object("contents"))
        if f.d.get("contents") is not None else None,
        uncertain_bytes=f.get_int("uncertain_bytes") if "uncertain_bytes" in f.d else 0,
        silent_frees=f.get_int("silent_frees") if "silent_frees" in f.d else 0,
    )


def reach_classes_to_dict(bytes_, counts) -> Dict[str, Any]:
    """{'unreferenced': {'bytes': B, 'count': N}, ...}: the classes as JSON has them."""
    return {name: {"bytes": b, "count": c} for name, b, c in zip(REACH_CLASSES, bytes_, counts)}


def _classes_from(f: "_Fields"):
    pairs = [_Fields(f.get_object(name), f"reachability {name!r}") for name in REACH_CLASSES]
    return tuple(p.get_int("bytes") for p in pairs), tuple(p.get_int("count") for p in pairs)


def reach_summary_to_dict(r: ReachSummary) -> Dict[str, Any]:
    return {"scanned_bytes": r.scanned_bytes, "elapsed_s": r.elapsed_s, "frozen_s": r.frozen_s,
            "threads": r.threads, **reach_classes_to_dict(r.bytes, r.counts), "problems": list(r.problems)}


def _summary_from_dict(d: Any) -> ReachSummary:
    f = _Fields(d, "reachability")
    bytes_, counts = _classes_from(f)
    return ReachSummary(scanned_bytes=f.get_int("scanned_bytes"), elapsed_s=f.get_float("elapsed_s"),
                        frozen_s=f.get_float("frozen_s"), threads=f.get_int("threads"),
                        bytes=bytes_, counts=counts,
                        problems=tuple(_warning(p) for p in f.get_list("problems")))


def _sample_to_dict(s: ContentSample) -> Dict[str, Any]:
    reach = {"class": s.reach} if s.reach else {}
    return {"address": hex(s.address), "size": s.size, **reach, "hex": s.head.hex(),
            "text": ascii_text(s.head)}


def _sample_from_dict(d: Any) -> ContentSample:
    f = _Fields(d, "content sample")
    return ContentSample(address=f.get_hex("address"), size=f.get_int("size"),
                         head=f.get_bytes_hex("hex"), reach=f.get_str("class") if "class" in f.d else "")


def _similarity_from(f: "_Fields") -> Optional[float]:
    similarity = f.get_optional("similarity", (int, float))
    return float(similarity) if similarity is not None else None


def _row_reach_to_dict(r: RowReach) -> Dict[str, Any]:
    return {**reach_classes_to_dict(r.bytes, r.counts), "similarity": r.similarity,
            "samples": [_sample_to_dict(s) for s in r.samples]}


def _row_reach_from_dict(d: Any) -> RowReach:
    f = _Fields(d, "stack reachability")
    bytes_, counts = _classes_from(f)
    return RowReach(bytes=bytes_, counts=counts,
                    samples=tuple(_sample_from_dict(item) for item in f.get_list("samples")),
                    similarity=_similarity_from(f))


def _contents_to_dict(c: RowContents) -> Dict[str, Any]:
    return {"sampled": c.sampled, "similarity": c.similarity,
            "samples": [_sample_to_dict(s) for s in c.samples],
            "pointers": [{"offset": p.offset, "address": hex(p.address), "symbol": p.symbol,
                          "objects": p.objects, "holds": list(p.holds)} for p in c.pointers]}


def _contents_from_dict(d: Any) -> RowContents:
    f = _Fields(d, "stack contents")
    pointers = []
    for item in f.get_list("pointers"):
        pf = _Fields(item, "content pointer")
        pointers.append(KernelPointer(offset=pf.get_int("offset"), address=pf.get_hex("address"),
                                      symbol=pf.get_str("symbol"), objects=pf.get_int("objects"),
                                      holds=tuple(pf.get_str_list("holds"))))
    return RowContents(sampled=f.get_int("sampled"),
                       samples=tuple(_sample_from_dict(item) for item in f.get_list("samples")),
                       similarity=_similarity_from(f), pointers=tuple(pointers))


def _frame_to_dict(fr: Frame) -> Dict[str, Any]:
    return {"addr": hex(fr.addr), "symbol": fr.symbol, "offset": fr.offset,
            "module": fr.module, "file": fr.file, "line": fr.line,
            "unwind": fr.unwind, "note": fr.note}


def _frame_from_dict(d: Any) -> Frame:
    f = _Fields(d, "frame")
    return Frame(addr=f.get_hex("addr"), symbol=f.get_optional("symbol", str),
                 offset=f.get_int("offset"), module=f.get_optional("module", str),
                 file=f.get_optional("file", str), line=f.get_optional("line", int),
                 unwind=f.get_str("unwind"), note=f.get_str("note"))


def _allocation_to_dict(a: Allocation) -> Dict[str, Any]:
    return {"pid": a.pid, "address": hex(a.address), "size": a.size,
            "timestamp_ns": a.timestamp_ns, "kind": a.kind, "cache": a.cache,
            "stack": {"pid": a.stack.pid, "stack_id": a.stack.stack_id}}


def _allocation_from_dict(d: Any) -> Allocation:
    f = _Fields(d, "allocation")
    stack = _Fields(f.get_object("stack"), "allocation stack")
    return Allocation(pid=f.get_int("pid"), address=f.get_hex("address"), size=f.get_int("size"),
                      timestamp_ns=f.get_int("timestamp_ns"), kind=f.get_str("kind"),
                      cache=f.get_str("cache") if "cache" in f.d else "",
                      stack=StackKey(pid=stack.get_int("pid"), stack_id=stack.get_int("stack_id")))


class _Fields:
    """Typed access to one JSON object; any mismatch is a one-line UsageError."""

    def __init__(self, d: Any, what: str):
        if not isinstance(d, dict):
            self._fail(f"{what} is {type(d).__name__}, expected an object")
        self.d, self.what = d, what

    @staticmethod
    def _fail(problem: str):
        raise UsageError(f"not a leaktrace report: {problem}", hint=_HINT)

    def _get(self, key: str, types: tuple, expected: str) -> Any:
        if key not in self.d:
            self._fail(f"{self.what} has no {key!r}")
        value = self.d[key]
        # bool is an int in Python, never a count in the schema.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            self._fail(f"{self.what} {key!r} is {_short(value)}, expected {expected}")
        return value

    def get_int(self, key: str) -> int:
        return self._get(key, (int,), "an integer")

    def get_float(self, key: str) -> float:
        return float(self._get(key, (int, float), "a number"))

    def get_str(self, key: str) -> str:
        return self._get(key, (str,), "a string")

    def get_bool(self, key: str) -> bool:
        return self._get(key, (bool,), "true or false")

    def get_list(self, key: str) -> List[Any]:
        return self._get(key, (list,), "a list")

    def get_ints(self, key: str) -> List[int]:
        values = self.get_list(key)
        items = _Fields({str(i): v for i, v in enumerate(values)}, f"{self.what} {key!r}")
        return [items.get_int(str(i)) for i in range(len(values))]

    def get_str_list(self, key: str) -> List[str]:
        values = self.get_list(key)
        items = _Fields({str(i): v for i, v in enumerate(values)}, f"{self.what} {key!r}")
        return [items.get_str(str(i)) for i in range(len(values))]

    def get_object(self, key: str) -> Dict[str, Any]:
        return self._get(key, (dict,), "an object")

    def get_optional(self, key: str, kind) -> Optional[Any]:
        if self.d.get(key) is None:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        return self._get(key, kinds, " or ".join(k.__name__ for k in kinds) + " or null")

    def get_hex(self, key: str) -> int:
        text = self.get_str(key)
        try:
            return int(text, 16)
        except ValueError:
            self._fail(f"{self.what} {key!r} is {_short(text)}, expected a hex address like 0x401136")

    def get_bytes_hex(self, key: str) -> bytes:
        text = self.get_str(key)
        try:
            return bytes.fromhex(text)
        except ValueError:
            self._fail(f"{self.what} {key!r} is {_short(text)}, expected hex digits")

    def get_counters(self, key: str) -> Mapping[str, int]:
        raw = self.get_object(key)
        values = _Fields(raw, f"{self.what} {key!r}")
        return {name: values.get_int(name) for name in raw}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
