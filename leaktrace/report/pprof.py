"""pprof: a gzipped profile.proto of outstanding memory, as heap profiles are.

Sample types are inuse_objects (count) and inuse_space (bytes, the default),
which `go tool pprof`, Pyroscope and Parca read. One sample per row, its
locations leaf first; each frame becomes a Location (its address, a Line
naming a Function with file and line when known) under a Mapping per module.
Labels carry the row's kind, pid, comm and verdict (`pprof -tags`). Encoding
is protobuf's own, from the schema in profile.proto.
"""
from __future__ import annotations

import gzip
from typing import BinaryIO, Dict, List, Tuple

from leaktrace.base.model import Frame, Report, ReportRow
from leaktrace.report.profile_proto import profile_classes


class _Tables:
    """The string, function, mapping and location tables of one profile."""

    def __init__(self, profile):
        self.profile = profile
        self.strings: Dict[str, int] = {}
        self.functions: Dict[Tuple[str, str], int] = {}
        self.mappings: Dict[str, int] = {}
        self.locations: Dict[Tuple, int] = {}
        self.string("")  # index 0 is the empty string, by the format's rule

    def string(self, text: str) -> int:
        if text not in self.strings:
            self.strings[text] = len(self.strings)
            self.profile.string_table.append(text)
        return self.strings[text]

    def mapping(self, module: str) -> int:
        if module not in self.mappings:
            mapping_id = len(self.mappings) + 1
            self.mappings[module] = mapping_id
            self.profile.mapping.add(id=mapping_id, filename=self.string(module), has_functions=True,
                                     has_filenames=True)
        return self.mappings[module]

    def function(self, name: str, file: str) -> int:
        key = (name, file)
        if key not in self.functions:
            function_id = len(self.functions) + 1
            self.functions[key] = function_id
            self.profile.function.add(id=function_id, name=self.string(name),
                                      system_name=self.string(name), filename=self.string(file))
        return self.functions[key]

    def location(self, frame: Frame) -> int:
        name, module = frame.name(), frame.module or ""
        key = (frame.addr, module, name, frame.file or "", frame.line or 0)
        if key not in self.locations:
            location_id = len(self.locations) + 1
            self.locations[key] = location_id
            location = self.profile.location.add(id=location_id, address=frame.addr)
            if module:
                location.mapping_id = self.mapping(module)
            location.line.add(function_id=self.function(name, frame.file or ""), line=frame.line or 0)
        return self.locations[key]


def build_profile(report: Report):
    """The Profile message for one report."""
    classes = profile_classes()
    profile = classes["Profile"]()
    tables = _Tables(profile)
    for kind, unit in (("inuse_objects", "count"), ("inuse_space", "bytes")):
        profile.sample_type.add(type=tables.string(kind), unit=tables.string(unit))
    profile.default_sample_type = tables.string("inuse_space")
    profile.time_nanos = int(report.timestamp * 1e9)
    profile.duration_nanos = int(report.elapsed_s * 1e9)
    profile.period_type.type, profile.period_type.unit = tables.string("space"), tables.string("bytes")
    profile.period = report.sample_rate
    for row in report.rows:
        sample = profile.sample.add(location_id=[tables.location(f) for f in row.frames],
                                    value=[row.count, row.bytes])
        for key, value in _labels(row):
            sample.label.add(key=tables.string(key), str=tables.string(value))
    for warning in report.warnings:
        profile.comment.append(tables.string(warning))
    return profile


def _labels(row: ReportRow) -> List[Tuple[str, str]]:
    labels = [("kind", row.kind)]
    labels += [(k, str(v)) for k, v in (("pid", row.pid), ("comm", row.comm), ("cache", row.cache),
                                        ("cgroup", row.cgroup), ("verdict", row.verdict)) if v]
    return labels


class PprofReporter:
    binary = True

    def __init__(self, show_unwind: bool = False) -> None:
        del show_unwind

    def render(self, report: Report, out: BinaryIO) -> None:
        out.write(gzip.compress(build_profile(report).SerializeToString(), mtime=0))
        out.flush()
