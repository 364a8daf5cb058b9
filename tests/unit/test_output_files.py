"""Output paths are untrusted (leaktrace/base/output_files.py): links, planted files
and FIFOs are refused without blocking, new files are private, whole-file
outputs replace the path by rename, and a planted FILE.partial is never used."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from leaktrace.base import output_files
from leaktrace.base.errors import UsageError


def test_new_files_are_created_0600(tmp_path):
    with output_files.open_file(str(tmp_path / "report.txt")) as out:
        out.write("x\n")
    with output_files.replaced(str(tmp_path / "profile.svg")) as out:
        out.write("<svg/>")
    for name in ("report.txt", "profile.svg"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def test_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    for attempt in (lambda: output_files.open_file(str(link), append=True),
                    lambda: output_files.open_file(str(link)),
                    lambda: output_files.check(str(link)),
                    lambda: output_files.check(str(link), replace=True)):
        with pytest.raises(UsageError, match="symbolic link"):
            attempt()
    assert victim.read_text() == "secret\n" and link.is_symlink()


def test_whole_file_output_ignores_a_planted_partial(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    target = tmp_path / "flame.svg"
    planted = tmp_path / "flame.svg.partial"
    planted.symlink_to(victim)
    with output_files.replaced(str(target)) as out:
        out.write("<svg/>")
    assert target.read_text() == "<svg/>" and victim.read_text() == "secret\n"
    assert planted.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flame.svg", "flame.svg.partial", "victim"]


def test_whole_file_output_refuses_a_link_at_the_path(tmp_path):
    # replaced() refuses a link at the path itself: a rename would not write
    # through it, but a user who made the link expects it to be followed.
    (tmp_path / "real.svg").write_text("old")
    (tmp_path / "link.svg").symlink_to(tmp_path / "real.svg")
    with pytest.raises(UsageError, match="symbolic link"):
        with output_files.replaced(str(tmp_path / "link.svg")):
            pass
    assert (tmp_path / "real.svg").read_text() == "old"


def test_a_hard_link_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    os.link(victim, tmp_path / "out.txt")
    with pytest.raises(UsageError, match="hard link"):
        output_files.open_file(str(tmp_path / "out.txt"), append=True)
    assert victim.read_text() == "secret\n"


def test_a_fifo_without_reader_is_refused_at_once(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    code = ("import sys\nfrom leaktrace.base import output_files\nfrom leaktrace.base.errors import UsageError\n"
            "try:\n output_files.open_file(sys.argv[1])\nexcept UsageError as e:\n print(e)")
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True,
                          timeout=30)
    assert "FIFO nobody reads" in done.stdout, done.stdout + done.stderr


def test_a_device_is_written_in_place_never_replaced():
    before = os.stat("/dev/null")
    with output_files.replaced("/dev/null") as out:
        out.write("discarded")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_a_failed_render_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "profile.pb.gz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with output_files.replaced(str(target), binary=True) as out:
            out.write(b"half")
            raise RuntimeError("render failed")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["profile.pb.gz"]


def test_streams_append_and_recordings_start_empty(tmp_path):
    path = tmp_path / "out"
    path.write_text("first\n")
    with output_files.open_file(str(path), append=True) as out:
        out.write("second\n")
    assert path.read_text() == "first\nsecond\n"
    with output_files.open_file(str(path), binary=True) as out:
        out.write(b"new")
    assert path.read_bytes() == b"new"


def test_check_names_a_missing_directory(tmp_path):
    with pytest.raises(UsageError, match="no directory"):
        output_files.check(str(tmp_path / "missing" / "out.json"), "-o")
    with pytest.raises(UsageError, match="is a directory"):
        output_files.check(str(tmp_path))
    output_files.check(str(tmp_path / "new.json"))  # a new file in a writable directory is fine


def test_own_descriptors_are_written_as_they_are(tmp_path):
    read, write = os.pipe()
    try:
        with output_files.open_file(f"/dev/fd/{write}", append=True) as out:
            out.write("through our own fd\n")
        with output_files.replaced(f"/proc/self/fd/{write}") as out:
            out.write("and again\n")
        os.close(write)
        assert os.read(read, 100) == b"through our own fd\nand again\n"
    finally:
        os.close(read)
    assert output_files.own_descriptor("/dev/stdout") == 1
    assert output_files.own_descriptor("/dev/fd/999") is None  # not open: a plain path
