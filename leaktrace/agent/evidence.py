"""Evidence of each escalation in --out DIR, with bounded retention.

Layout: DIR/events.jsonl gets one JSON line per escalation (findings.event() says
what it holds); DIR/<id>/ holds trace.rec (the recording: `leaktrace report`
and `diff` read it), profile.pb.gz (pprof of the final report) and
verdicts.json (the final report's sites with their verdicts).

Retention: before each escalation the oldest escalation directories are
deleted until at most retain - 1 remain and everything under DIR (the event
log included, which is rotated to events.jsonl.1 past a quarter of the
limit) fits in max_bytes; after it, the same with retain, sparing the one
just written (so DIR may exceed max_bytes by that one until the next). A write that fails (a full disk, a removed
directory) is one line through warn() and a count in errors; the agent
goes on, and what was written stays.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, List, Optional

from leaktrace.base.errors import UsageError
from leaktrace.base.model import Report
from leaktrace.report.recording import RecordingWriter
from leaktrace.report.pprof import build_profile
from leaktrace.report.serialize import report_to_dict

EVENTS = "events.jsonl"
RECORDING, PROFILE, VERDICTS = "trace.rec", "profile.pb.gz", "verdicts.json"


class EvidenceStore:
    def __init__(self, root: str, retain: int, max_bytes: int, warn: Callable[[str], None]):
        self.root = Path(root)
        self.retain = retain
        self.max_bytes = max_bytes
        self.warn = warn
        self.errors = 0

    def check(self) -> None:
        """Refuse at start an --out the agent cannot write to (one line, exit 64)."""
        probe = self.root / f".leaktrace-write-test-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise UsageError(f"--out {self.root}: cannot write there: {error.strerror}",
                             hint="give a writable directory with --out DIR") from None

    def failed(self, what: str, why: str) -> None:
        self.errors += 1
        self.warn(f"cannot write {what} in {self.root}: {why}; the agent continues without it")

    def open(self, name: str) -> Optional[Path]:
        """A new escalation directory (after making room), or None when it cannot be made."""
        self.enforce(keep=self.retain - 1)
        directory = self.root / name
        try:
            directory.mkdir(parents=True)
            return directory
        except OSError as error:
            self.failed(f"evidence directory {name}", error.strerror or str(error))
            return None

    def recorder(self, directory: Optional[Path]) -> "Recorder":
        """record() for the escalation: appends to its recording until a write fails."""
        return Recorder(self, directory)

    def finish(self, directory: Optional[Path], report: Optional[Report]) -> List[str]:
        """The pprof profile and verdicts of the final report; every file of the escalation."""
        if directory is None:
            return []
        if report is not None:
            self._write(directory / PROFILE, gzip.compress(
                build_profile(report).SerializeToString(), mtime=0))
            self._write(directory / VERDICTS, json.dumps(report_to_dict(report), indent=1).encode())
        try:
            return sorted(str(path) for path in directory.iterdir())
        except OSError:
            return []

    def log(self, event: dict) -> None:
        """The escalation's line in the event log; then retention."""
        self._append_event(event)
        self.enforce(keep=self.retain, spare=1)

    def _write(self, path: Path, data: bytes) -> None:
        try:
            path.write_bytes(data)
        except OSError as error:
            self.failed(f"{path.parent.name}/{path.name}", error.strerror or str(error))

    def _append_event(self, event: dict) -> None:
        path = self.root / EVENTS
        line = json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n"
        try:
            if path.exists() and path.stat().st_size + len(line) > self.max_bytes // 4:
                os.replace(path, self.root / (EVENTS + ".1"))
            with open(path, "a", encoding="utf-8") as log:
                log.write(line)
        except OSError as error:
            self.failed(EVENTS, error.strerror or str(error))

    def escalations(self) -> list:
        """Escalation directories, oldest first (their names start with a timestamp)."""
        try:
            return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name[:1].isdigit())
        except OSError:
            return []

    def enforce(self, keep: int, spare: int = 0) -> None:
        """Delete the oldest escalations beyond `keep`, or while everything is over
        max_bytes; the newest `spare` are never deleted for size."""
        kept = self.escalations()
        while len(kept) > keep or (len(kept) > spare and _size(self.root) > self.max_bytes):
            shutil.rmtree(kept.pop(0), ignore_errors=True)


class Recorder:
    """Appends each report to DIR/<id>/trace.rec; after a failed write, drops the rest."""

    def __init__(self, store: EvidenceStore, directory: Optional[Path]):
        self.store = store
        self.path = directory / RECORDING if directory is not None else None
        self.name = f"{directory.name}/{RECORDING}" if directory is not None else RECORDING
        self.writer: Optional[RecordingWriter] = None

    def __call__(self, report: Report) -> None:
        if self.path is None:
            return
        try:
            if self.writer is None:
                self.writer = RecordingWriter(str(self.path))
            self.writer.write(report)
        except (OSError, UsageError) as error:
            self.store.failed(self.name, str(error))
            self.path = None

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError as error:
                self.store.failed(self.name, str(error))


def escalation_name(now: float, label: str) -> str:
    """A sortable, unique-enough directory name: 20260107T101502Z-process-1234."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)[:60]
    return f"{stamp}-{safe}"


def _size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total
