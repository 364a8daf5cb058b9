"""probes/release.py hands the last reference of each fd to a helper process:
leaktrace's own copies are closed at once, the helper closes its copies and
exits, and wait() returns when it has. Shown with pipes: a pipe's reader sees
EOF only once every copy of its write end is closed."""
from __future__ import annotations

import os
import select

from leaktrace.probes import release


def test_the_helper_holds_the_fds_until_it_closes_them():
    pipes = [os.pipe() for _ in range(4)]
    release.release([write for _, write in pipes])
    for _, write in pipes:  # ours are closed already
        try:
            os.fstat(write)
            raise AssertionError(f"fd {write} still open in leaktrace")
        except OSError:
            pass
    release.wait()
    for read, _ in pipes:
        assert select.select([read], [], [], 5)[0], "write end still held after wait()"
        assert os.read(read, 1) == b""  # EOF: the helper closed the last copy
        os.close(read)


def test_close_all_closes_every_fd():
    pipes = [os.pipe() for _ in range(8)]
    release.close_all([write for _, write in pipes])
    for read, _ in pipes:
        assert os.read(read, 1) == b""
        os.close(read)


def test_nothing_to_release_starts_no_helper():
    release.release([])
    assert release._helpers == []
