"""Content samples: which blocks, how alike, and the hex + ASCII dump."""
from __future__ import annotations

from leaktrace.base.model import INDIRECTLY_LOST, REACHABLE, UNREFERENCED
from leaktrace.judge.reach.content import SAMPLE_BLOCKS, ascii_text, choose, hex_lines, similarity


def test_choose_prefers_lost_blocks_then_the_oldest():
    candidates = [(0, REACHABLE, 1), (1, UNREFERENCED, 9), (2, INDIRECTLY_LOST, 2), (3, UNREFERENCED, 5)]
    assert choose(candidates) == [3, 1, 2, 0]
    many = [(i, REACHABLE, 100 - i) for i in range(40)]
    assert choose(many) == list(range(39, 39 - SAMPLE_BLOCKS, -1))


def test_similarity():
    assert similarity([b"abc"]) is None
    assert similarity([b"request #1", b"request #1"]) == 1.0
    assert similarity([b"request #1", b"request #2"]) == 0.95  # 9 of 10 positions agree
    assert similarity([b"\x00\x00", b"\xff\xff", b"\x00\x00", b"\x01\x02"]) == 0.5
    assert similarity([b"ab", b"abcd"]) == 1.0  # positions only one head has do not count
    assert similarity([b"", b""]) == 1.0


def test_hex_and_ascii():
    data = b"GET /index.html HTTP/1.1\r\n\x00\xff"
    assert hex_lines(data) == [
        ("47 45 54 20 2f 69 6e 64 65 78 2e 68 74 6d 6c 20", "GET /index.html "),
        ("48 54 54 50 2f 31 2e 31 0d 0a 00 ff", "HTTP/1.1...."),
    ]
    assert ascii_text(b"\x7fA~ ") == ".A~ "
