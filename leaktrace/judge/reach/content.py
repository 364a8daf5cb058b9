"""Pure: what outstanding blocks hold, shown so a person can recognise it.

A leaked request buffer shows the request; a leaked object shows its vtable
pointer and fields. choose() picks the blocks of a stack worth sampling (lost
ones first, then the oldest); similarity() says how alike their first bytes
are (1.0: the same bytes in every block, as in copies of one record);
hex_lines() is the classic hex + ASCII dump.
"""
from __future__ import annotations

from collections import Counter
from typing import List, Optional, Sequence, Tuple

HEAD_BYTES = 64  # first bytes kept per sampled block
SAMPLE_BLOCKS = 16  # blocks sampled per stack, for similarity
SHOWN_SAMPLES = 3  # samples a report row carries
LINE_BYTES = 16


def choose(candidates: Sequence[Tuple[int, int, int]]) -> List[int]:
    """Indexes to sample from (index, class code, timestamp_ns) of one stack's
    blocks: lost classes (lower codes) first, then the oldest."""
    ranked = sorted(candidates, key=lambda c: (c[1], c[2], c[0]))
    return [index for index, _, _ in ranked[:SAMPLE_BLOCKS]]


def similarity(heads: Sequence[bytes], unit: int = 1) -> Optional[float]:
    """Mean, over positions of `unit` bytes, of the share of heads holding that
    position's most common value; None for fewer than two heads."""
    if len(heads) < 2:
        return None
    width = max(len(h) for h in heads)
    if width == 0:
        return 1.0
    shares = []
    for position in range(0, width, unit):
        column = [h[position:position + unit] for h in heads if position < len(h)]
        if len(column) > 1:
            shares.append(Counter(column).most_common(1)[0][1] / len(column))
    return sum(shares) / len(shares) if shares else 1.0


def ascii_text(data: bytes) -> str:
    """Printable ASCII as itself, everything else as '.'."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data)


def hex_lines(data: bytes, width: int = LINE_BYTES) -> List[Tuple[str, str]]:
    """(hex bytes, ASCII) per line of `width` bytes."""
    return [(" ".join(f"{b:02x}" for b in data[i:i + width]), ascii_text(data[i:i + width]))
            for i in range(0, len(data), width)]
