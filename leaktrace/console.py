"""One-line messages on stderr, flushed: how every stage tells the user something."""
from __future__ import annotations

import sys
from typing import Optional, TextIO


def stderr_line(message: str, stream: Optional[TextIO] = None) -> None:
    print(message, file=stream or sys.stderr, flush=True)
