"""parse_maps / read_maps on real /proc data."""
import os
import subprocess

import pytest

from leaktrace.base.errors import TargetError
from leaktrace.symbols.maps import parse_maps, read_maps
from symbols_programs import DATA

# Captured from a running program whose file was deleted and whose path has spaces.
SAMPLE = (DATA / "maps_deleted_spaces.txt").read_text()


def test_sample_parses_every_line():
    entries = parse_maps(SAMPLE)
    assert len(entries) == len(SAMPLE.splitlines())


def test_path_with_spaces_and_deleted_suffix():
    first = parse_maps(SAMPLE)[0]
    assert first.path == "/tmp/lt sample/leaky prog"
    assert first.deleted
    assert first.file_backed and not first.executable
    assert (first.start, first.end, first.inode) == (0x5560C0F1F000, 0x5560C0F20000, 2147016)


def test_executable_mapping_keeps_its_file_offset():
    text = [e for e in parse_maps(SAMPLE) if e.path.endswith("libc.so.6") and e.executable]
    assert len(text) == 1
    assert text[0].offset == 0x26000 and text[0].perms == "r-xp" and not text[0].deleted


def test_special_and_anonymous_mappings_are_not_file_backed():
    by_path = {e.path: e for e in parse_maps(SAMPLE)}
    assert {"[heap]", "[vdso]", "[stack]", ""} <= set(by_path)
    assert by_path["[vdso]"].executable and not by_path["[vdso]"].file_backed
    assert not by_path[""].file_backed


def test_malformed_lines_are_skipped_not_fatal():
    text = "garbage\nzz-yy r-xp 0 fe:00 1 /x\n" + SAMPLE.splitlines()[1] + "\n"
    entries = parse_maps(text)
    assert [e.path for e in entries] == ["/tmp/lt sample/leaky prog"]


def test_read_maps_of_this_process_has_an_executable_python():
    entries = read_maps(os.getpid())
    exe = os.path.realpath("/proc/self/exe")
    assert any(e.executable and os.path.realpath(e.path) == exe for e in entries)


def test_read_maps_of_an_exited_process_says_it_is_gone():
    process = subprocess.Popen(["true"])
    process.wait()
    with pytest.raises(TargetError, match=f"process {process.pid} is gone"):
        read_maps(process.pid)
