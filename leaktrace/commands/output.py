"""Where offline commands (report, diff) write: --output FILE or stdout.

Binary formats (pprof) refuse a terminal: gzip bytes on a screen help nobody.
A file is replaced whole once the output is complete (output_files.replaced).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import IO, Iterator, Optional

from ..base import output_files
from ..base.errors import UsageError


@contextmanager
def open_output(path: Optional[str], binary: bool, what: str) -> Iterator[IO]:
    if path is None:
        if binary and sys.stdout.isatty():
            raise UsageError(f"the {what} format is binary and stdout is a terminal",
                             hint="write it to a file with -o FILE")
        yield sys.stdout.buffer if binary else sys.stdout
        return
    with output_files.replaced(path, "-o", binary=binary) as out:
        yield out
