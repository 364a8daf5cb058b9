"""leaktrace/base/cache.py: where the cache lives for root and for others, and what
others could have written is refused with one warning (another user is played
by pretending to run under another effective uid)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from leaktrace.base import cache


@pytest.fixture(autouse=True)
def fresh_warning(monkeypatch):
    monkeypatch.setattr(cache, "_warned", False)


def test_root_never_uses_the_home_it_inherited(monkeypatch, tmp_path):
    monkeypatch.delenv("LEAKTRACE_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "someone"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "someone" / ".cache"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cache.root_dir() == Path("/var/cache/leaktrace")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cache.root_dir() == tmp_path / "someone" / ".cache" / "leaktrace"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.root_dir() == tmp_path / "someone" / ".cache" / "leaktrace"


def test_a_private_directory_is_made_and_files_round_trip(monkeypatch, tmp_path):
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path / "cache"))
    directory = cache.directory("placement")
    assert directory == tmp_path / "cache" / "placement"
    assert oct(directory.stat().st_mode & 0o777) == oct(0o700)
    cache.write_bytes(directory / "a", b"data")
    assert cache.read_bytes(directory / "a") == b"data"
    assert oct((directory / "a").stat().st_mode & 0o777) == oct(0o600)
    assert cache.read_bytes(directory / "missing") is None


def test_a_directory_of_another_user_is_refused_with_one_warning(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path / "cache"))
    assert cache.directory("unwind") is not None
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)  # the directory is now someone else's
    assert cache.directory("unwind") is None
    assert cache.directory("placement") is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "belongs to user" in err[0] and "running without the cache" in err[0]


@pytest.mark.parametrize("mode", [0o770, 0o707])
def test_a_directory_others_can_write_is_refused(monkeypatch, tmp_path, mode):
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path / "cache"))
    top = cache.directory()
    os.chmod(top, mode)
    assert cache.directory("unwind") is None


def test_a_writable_non_sticky_parent_is_refused(monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone could rename the cache away and put another in its place
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(shared / "cache"))
    assert cache.directory() is None
    os.chmod(shared, 0o1777)  # sticky, like /tmp: our entry cannot be renamed by others
    assert cache.directory() == shared / "cache"


def test_a_symlinked_cache_is_refused(monkeypatch, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "cache")
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path / "cache"))
    assert cache.directory() is None


def test_a_file_others_can_write_or_a_link_is_not_read(monkeypatch, tmp_path):
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path / "cache"))
    directory = cache.directory()
    (directory / "loose").write_bytes(b"planted")
    os.chmod(directory / "loose", 0o666)
    assert cache.read_bytes(directory / "loose") is None
    (tmp_path / "target").write_bytes(b"elsewhere")
    os.symlink(tmp_path / "target", directory / "link")
    assert cache.read_bytes(directory / "link") is None
