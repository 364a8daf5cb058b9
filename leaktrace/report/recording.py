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
import itertools
import json
import os
import stat
import time
import zlib
from dataclasses import dataclass, replace
from typing import BinaryIO, Iterator, List, Optional, Sequence, Tuple

from leaktrace import __version__
from leaktrace.base import output_files
from leaktrace.base.errors import EX_NOINPUT, LeaktraceError, UsageError
from leaktrace.base.model import Report
from leaktrace.report.json_report import read_reports
from leaktrace.report.serialize import report_to_dict

FORMAT = "leaktrace-recording"
VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
# Bounds for reading an untrusted file: one report line, and all of them.
MAX_DOCUMENT_BYTES = 64 << 20
MAX_TEXT_BYTES = 1 << 30
_HINT = "pass a file written by `leaktrace attach --record FILE` (or `--format json -o FILE`)"


class RecordingWriter:
    """Appends one gzip member per report to a new file, flushed at once."""

    def __init__(self, path: str):
        self._file: BinaryIO = output_files.open_file(path, "--record", binary=True)
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
    damage: str = ""  # why reading stopped early at a damaged member, else ""

    def notes(self) -> List[str]:
        """What the reader had to leave out, one warning line each."""
        if self.damage:
            return [f"{self.path} is corrupt: {self.damage}; showing the "
                    f"{len(self.reports)} intervals before it"]
        if self.truncated:
            return [f"{self.path}: the last interval was cut off while being written; "
                    "showing the complete ones"]
        return []


def read_recording(path: str) -> Recording:
    """Every complete interval of a recording (or a JSON-lines file).

    The file is untrusted: only a regular file is read (a FIFO or /dev/zero
    would block or never end), one document may inflate to MAX_DOCUMENT_BYTES
    and the whole file to MAX_TEXT_BYTES, and each document is parsed as it is
    inflated, so a gzip bomb costs bounded memory and time.
    """
    with _open_regular(path) as stream:
        reader = _Reader(stream, path)
        compressed = stream.read(2) == GZIP_MAGIC
        stream.seek(0)
        documents = reader.members() if compressed else reader.lines()
        lines = (line for document in documents for line in _decoded(document, path))
        first = next(lines, "")
        header = _header([first])
        reports = tuple(read_reports(lines if header else itertools.chain([first], lines)))
    return Recording(path, header, reports, reader.truncated, reader.damage)


def _open_regular(path: str) -> BinaryIO:
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LeaktraceError(f"no such recording: {path}", hint=_HINT, exit_code=EX_NOINPUT) from None
    except OSError as e:
        raise LeaktraceError(f"cannot read {path}: {e.strerror}", exit_code=EX_NOINPUT) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LeaktraceError(f"{path} is not a regular file", hint=_HINT, exit_code=EX_NOINPUT)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _too_big(path: str, limit: int, what: str) -> UsageError:
    return UsageError(f"{path}: {what} is larger than {limit >> 20} MiB: not a recording leaktrace "
                      "reads (damaged or hostile?)",
                      hint="split a real one: zcat FILE | head -n N > part.jsonl")


class _Reader:
    """The documents of one file, within the size bounds; notes how the file ended."""

    def __init__(self, stream: BinaryIO, path: str):
        self.stream, self.path = stream, path
        self.used = 0  # bytes of text so far
        self.truncated = False  # the last gzip member was cut off mid-write
        self.damage = ""  # what damaged gzip data stopped the reading

    def _count(self, size: int) -> None:
        self.used += size
        if self.used > MAX_TEXT_BYTES:
            raise _too_big(self.path, MAX_TEXT_BYTES, "its content")

    def lines(self) -> Iterator[bytes]:
        """Plain JSON lines."""
        for number in itertools.count(1):
            line = self.stream.readline(MAX_DOCUMENT_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_DOCUMENT_BYTES:
                raise _too_big(self.path, MAX_DOCUMENT_BYTES, f"line {number}")
            self._count(len(line))
            yield line

    def members(self) -> Iterator[bytes]:
        """The decompressed gzip members, until the end or the first damage."""
        offset, pending = 0, b""
        for number in itertools.count(1):
            pending = pending or self.stream.read(_CHUNK)
            if not pending:
                return
            inflater, parts, size = zlib.decompressobj(wbits=31), [], 0
            try:
                while not inflater.eof:
                    if not pending and not (pending := self.stream.read(_CHUNK)):
                        self.truncated = True  # the writer was stopped mid-member
                        return
                    part = inflater.decompress(pending, MAX_DOCUMENT_BYTES + 1 - size)
                    size += len(part)
                    if size > MAX_DOCUMENT_BYTES:
                        raise _too_big(self.path, MAX_DOCUMENT_BYTES, f"gzip member {number}")
                    parts.append(part)
                    offset += len(pending) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
                    pending = inflater.unconsumed_tail or inflater.unused_data
            except zlib.error as exc:
                self.damage = f"gzip member {number} is damaged near byte {offset} ({exc})"
                return
            self._count(size)
            yield b"".join(parts)


def _decoded(document: bytes, path: str) -> List[str]:
    try:
        return document.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UsageError(f"{path} is neither a recording nor JSON lines", hint=_HINT) from None


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
