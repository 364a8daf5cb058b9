"""One-line messages on stderr, flushed: how every stage tells the user something."""
from __future__ import annotations

import sys
from typing import Optional, TextIO


def stderr_line(message: str, stream: Optional[TextIO] = None) -> None:
    # One write: print() writes the text and the newline apart, and a
    # progress line from another thread could land between them.
    stream = stream or sys.stderr
    stream.write(message + "\n")
    stream.flush()
