"""Recordings: every interval's symbolized Report, saved as it is made.

A recording is a sequence of gzip members (RFC 1952), each holding one JSON
line: first a header line, then one report per interval in the schema of
docs/json-schema.md (docs/recording-format.md). Each member is written and
flushed whole at its interval, so a recording cut short by Ctrl-C, the target
exiting or leaktrace being killed still holds every complete interval, and
`zcat FILE` prints the JSON lines. read_recording() also reads plain JSON
lines (`--format json -o FILE`), so either can be rendered again offline.
"""
from __future__ import annotations

import gzip
import json
import time
import zlib
from dataclasses import dataclass, replace
from typing import BinaryIO, List, Optional, Sequence, Tuple

from leaktrace import __version__
from leaktrace.errors import EX_NOINPUT, LeaktraceError, UsageError
from leaktrace.model import Report
from leaktrace.report.json_report import read_reports
from leaktrace.report.serialize import report_to_dict

FORMAT = "leaktrace-recording"
VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
_HINT = "pass a file written by `leaktrace attach --record FILE` (or `--format json -o FILE`)"


class RecordingWriter:
    """Appends one gzip member per report to a new file, flushed at once."""

    def __init__(self, path: str):
        try:
            self._file: BinaryIO = open(path, "wb")
        except OSError as e:
            raise UsageError(f"cannot write recording {path}: {e.strerror}",
                             hint="choose a writable path for --record") from None
        header = {"format": FORMAT, "version": VERSION, "leaktrace": __version__,
                  "created": time.time()}
        self._write_line(header)

    def write(self, report: Report) -> None:
        self._write_line(report_to_dict(report))

    def _write_line(self, document: dict) -> None:
        line = json.dumps(document, separators=(",", ":")) + "\n"
        self._file.write(gzip.compress(line.encode("ascii"), mtime=0))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class Recording:
    path: str
    header: dict  # {} for plain JSON lines
    reports: Tuple[Report, ...]
    truncated: bool = False  # the last interval was cut off mid-write (and dropped)


def read_recording(path: str) -> Recording:
    """Every complete interval of a recording (or a JSON-lines file)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise LeaktraceError(f"no such recording: {path}", hint=_HINT, exit_code=EX_NOINPUT) from None
    except OSError as e:
        raise LeaktraceError(f"cannot read {path}: {e.strerror}", exit_code=EX_NOINPUT) from None
    truncated = False
    if data.startswith(GZIP_MAGIC):
        members, truncated = _gzip_members(data)
        text = b"".join(members)
    else:
        text = data
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{path} is neither a recording nor JSON lines", hint=_HINT) from None
    header = _header(lines)
    reports = tuple(read_reports(lines[1:] if header else lines))
    return Recording(path, header, reports, truncated)


def _gzip_members(data: bytes) -> Tuple[List[bytes], bool]:
    """The decompressed gzip members, and whether the last one was incomplete."""
    view, pos, members = memoryview(data), 0, []
    while pos < len(data):
        inflater = zlib.decompressobj(wbits=31)
        parts = []
        try:
            while not inflater.eof and pos < len(data):
                chunk = view[pos:pos + _CHUNK]
                parts.append(inflater.decompress(chunk))
                pos += len(chunk) - len(inflater.unused_data)
        except zlib.error:
            return members, True
        if not inflater.eof:
            return members, True
        members.append(b"".join(parts))
    return members, False


def _header(lines: List[str]) -> dict:
    if not lines or '"format"' not in lines[0][:200]:
        return {}
    try:
        header = json.loads(lines[0])
    except ValueError:
        return {}
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return {}
    if header.get("version") != VERSION:
        raise UsageError(f"recording format version {header.get('version')} is not supported",
                         hint="use the leaktrace version that wrote the recording")
    return header


def select(reports: Sequence[Report], at: Optional[float] = None) -> Tuple[Report, ...]:
    """The reports up to the one at `at` seconds of tracing (the last taken by
    then), or all of them when `at` is None. The chosen one is the last."""
    if not reports:
        raise UsageError("the recording holds no complete interval",
                         hint="record for at least one interval (see --interval)")
    if at is None:
        return tuple(reports)
    chosen = [r for r in reports if r.elapsed_s <= at + 1e-9]
    if not chosen:
        first, last = reports[0].elapsed_s, reports[-1].elapsed_s
        raise UsageError(f"no interval at {at:g} s: the recording covers {first:g}..{last:g} s",
                         hint="--at takes seconds since tracing started")
    return tuple(chosen)


def limited(report: Report, top: int) -> Report:
    """The report with its top N rows (rows are saved in rank order); 0: all."""
    return replace(report, rows=report.rows[:top]) if top > 0 else report
