"""`leaktrace report` and `diff` read files anyone may have made (issue #23.8):
a real gzip bomb, a FIFO, /dev/zero and JSON nested 100,000 deep each get one
clear line and an exit code, quickly and in bounded memory, never a hang, a
traceback or gigabytes of memory."""
import gzip
import os
import subprocess
import sys
import zlib

import pytest

from harness import assert_clean_error, leaktrace_command

# What a refused file may cost leaktrace, at most (its own baseline is ~60 MB).
MAX_RSS_MB = 400


@pytest.fixture
def gzip_bomb(tmp_path):
    """About 1 MB of gzip that inflates to 1 GiB of zeros: one member."""
    path = tmp_path / "bomb.rec"
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    with open(path, "wb") as out:
        for _ in range(1024):
            out.write(deflate.compress(zeros))
        out.write(deflate.flush())
    assert path.stat().st_size < 2 << 20
    return path


def measured_in_child(args):
    """(CompletedProcess, peak RSS in MB) of leaktrace run by a fresh Python
    that reads its only child's ru_maxrss, so no other child counts."""
    code = ("import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, stdin=subprocess.DEVNULL)\n"
            "sys.stdout.write(done.stdout)\nsys.stderr.write(done.stderr)\n"
            "print('RSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(done.returncode)")
    done = subprocess.run([sys.executable, "-c", code, *leaktrace_command(), *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    *lines, last = done.stderr.splitlines()
    stderr = "".join(line + "\n" for line in lines)
    return subprocess.CompletedProcess(args, done.returncode, done.stdout, stderr), int(last.split()[1]) / 1024


def leaktrace(*args):
    return subprocess.run([*leaktrace_command(), *map(str, args)], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_a_gzip_bomb_is_refused_in_bounded_memory(gzip_bomb):
    done, rss_mb = measured_in_child(["report", gzip_bomb])
    assert_clean_error(done, "larger than")
    assert done.returncode == 64
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.0f} MB reading a 1 MB bomb"


def test_many_small_bombs_are_refused_by_the_total_bound(tmp_path):
    """Members under the per-interval bound, each a valid JSON document padded
    with spaces, until the whole file passes the 1 GiB bound."""
    member = gzip.compress(b"{}" + b" " * (60 << 20) + b"\n", 9)
    path = tmp_path / "many.rec"
    path.write_bytes(member * 20)  # 20 x 60 MiB inflated, ~1.2 MB on disk
    done, rss_mb = measured_in_child(["report", path])
    assert_clean_error(done)
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.0f} MB"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "recording.fifo"
    os.mkfifo(fifo)
    for args in (["report", fifo], ["diff", fifo, fifo]):
        done = leaktrace(*args)
        assert_clean_error(done, "not a regular file")
        assert done.returncode == 66


def test_dev_zero_is_refused_at_once():
    done = leaktrace("report", "/dev/zero")
    assert_clean_error(done, "not a regular file")
    assert done.returncode == 66


@pytest.mark.parametrize("compressed", [False, True])
def test_deep_nesting_is_a_clean_error(tmp_path, compressed):
    text = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    path = tmp_path / "deep.rec"
    path.write_bytes(gzip.compress(text) if compressed else text)
    done = leaktrace("report", path)
    assert_clean_error(done, "nests deeper")
    assert done.returncode == 64
