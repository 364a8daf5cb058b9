"""What leaktrace prints about the BPF program it is about to compile.

`leaktrace attach -p PID --dump-bpf`: the C program with its -D settings, for
bug reports. It needs neither root, bcc nor a live target: the tests make
privilege checks and importing bcc fail, and name a PID that cannot exist.

The kernel headers notice: when /lib/modules/<release>/build is missing and
headers under /usr/src are used instead (Ubuntu's whole tree, or Debian's
split one merged), one line on stderr says which.
"""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import pytest

from leaktrace.cli import main
from leaktrace.probes import features, headers, source

BPF = Path(__file__).resolve().parents[2] / "bpf"
LOCAL_INCLUDE = re.compile(r'^#include "[^"]+"$')


@pytest.fixture(autouse=True)
def no_privileges_no_bcc(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("--dump-bpf must not need privileges or bcc")

    monkeypatch.setattr(features, "check_privileges", refuse)
    monkeypatch.setattr(features, "import_bcc", refuse)


def impossible_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def dump(capsys, pid: int, *options: str) -> str:
    assert main(["attach", "-p", str(pid), "--dump-bpf", *options]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def settings(text: str) -> dict:
    """The #define NAME VALUE block at the top, and the -D flags in its first line."""
    lines = text.splitlines()
    flags = dict(re.findall(r"-D(\w+)=(-?\d+)", lines[0]))
    defines = {}
    for line in lines[1:]:  # the source's own #ifndef defaults come later
        match = re.fullmatch(r"#define (\w+) (-?\d+)", line)
        if not match:
            break
        defines[match.group(1)] = match.group(2)
    return {"flags": flags, "defines": defines}


@pytest.mark.parametrize("pid", [os.getpid(), impossible_pid()], ids=["live", "no-such-pid"])
@pytest.mark.parametrize("min_size, max_allocs, unwind, cfi", [
    ("48", "4096", "fp", "0"),
    ("7", "2048", "cfi", "1"),
])
def test_dump_bpf_prints_the_program_with_the_options_as_defines(capsys, pid, min_size, max_allocs,
                                                                  unwind, cfi):
    text = dump(capsys, pid, "--min-size", min_size, "--max-allocs", max_allocs, "--unwind", unwind)
    found = settings(text)
    expected = {"MIN_SIZE": min_size, "MAX_ALLOCS": max_allocs, "UNWIND_CFI": cfi}
    assert {k: found["defines"].get(k) for k in expected} == expected, found
    assert found["flags"] == found["defines"], "the -D flags and the #define block disagree"


def test_dump_bpf_inlines_the_source_and_its_local_headers(capsys):
    text = dump(capsys, os.getpid())
    out_lines = set(text.splitlines())
    includes = [LOCAL_INCLUDE.match(line) for line in (BPF / "user_alloc.c").read_text().splitlines()]
    headers = [m.group(0).split('"')[1] for m in includes if m]
    assert headers, "user_alloc.c includes no local header: the test checks nothing"
    for name in ["user_alloc.c", *headers]:
        missing = [line for line in (BPF / name).read_text().splitlines()
                   if line.strip() and not LOCAL_INCLUDE.match(line) and line not in out_lines]
        assert not missing, f"{name}: {len(missing)} lines missing from --dump-bpf, e.g. {missing[:3]}"


# ---- kernel headers notice ------------------------------------------------------------------

FAKE_RELEASE = "0.0.0-leaktrace-test"  # no /lib/modules/<release>/build anywhere


def ubuntu_layout(src: Path) -> Path:
    """linux-headers-V (the common tree) and linux-headers-V-generic, whose include/
    has the generated config and relative links into the common tree."""
    common = src / "linux-headers-6.8.0-45"
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "kconfig.h").write_text("/* kconfig */\n")
    (common / "Makefile").write_text("")
    flavour = src / "linux-headers-6.8.0-45-generic"
    (flavour / "include" / "generated").mkdir(parents=True)
    (flavour / "include" / "generated" / "autoconf.h").write_text("#define CONFIG_X86_64 1\n")
    os.symlink("../../linux-headers-6.8.0-45/include/linux", flavour / "include" / "linux")
    (flavour / "Makefile").write_text("")
    return flavour


def debian_layout(src: Path) -> Path:
    """linux-headers-V-common + linux-headers-V-<arch>: merged into the cache."""
    arch = headers._ARCH_SUFFIX.get(platform.machine(), platform.machine())
    (src / "linux-headers-6.1.0-57-common" / "include" / "linux").mkdir(parents=True)
    (src / "linux-headers-6.1.0-57-common" / "include" / "linux" / "kconfig.h").write_text("")
    (src / f"linux-headers-6.1.0-57-{arch}" / "include" / "generated").mkdir(parents=True)
    (src / f"linux-headers-6.1.0-57-{arch}" / "include" / "generated" / "autoconf.h").write_text("")
    return src / f"linux-headers-6.1.0-57-{arch}"


@pytest.fixture
def no_kernel_build_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(headers.platform, "release", lambda: FAKE_RELEASE)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "")  # unset for ensure_kernel_source; restored after
    monkeypatch.setenv("LEAKTRACE_HEADERS_SEARCH", str(tmp_path / "src"))
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "src").mkdir()
    return tmp_path


def test_ubuntu_whole_headers_are_used_as_they_are_and_announced_once(no_kernel_build_dir, capsys):
    flavour = ubuntu_layout(no_kernel_build_dir / "src")
    assert headers.ensure_kernel_source() == str(flavour)
    assert os.environ["BCC_KERNEL_SOURCE"] == str(flavour)
    notice = capsys.readouterr().err.splitlines()
    assert len(notice) == 1, notice
    assert notice[0].startswith("leaktrace: ") and FAKE_RELEASE in notice[0], notice
    assert str(flavour) in notice[0], notice
    assert not (no_kernel_build_dir / "cache").exists(), "a whole tree needs no merged copy"
    assert headers.ensure_kernel_source() == str(flavour)
    assert capsys.readouterr().err == "", "the notice is printed once"


def test_debian_split_headers_get_the_same_kind_of_notice(no_kernel_build_dir, capsys):
    arch_dir = debian_layout(no_kernel_build_dir / "src")
    used = headers.ensure_kernel_source()
    assert used.startswith(str(no_kernel_build_dir / "cache")), used
    assert os.path.isfile(os.path.join(used, "include", "linux", "kconfig.h"))
    notice = capsys.readouterr().err.splitlines()
    assert len(notice) == 1, notice
    assert notice[0].startswith("leaktrace: ") and FAKE_RELEASE in notice[0], notice
    assert arch_dir.name in notice[0] and used in notice[0], notice


def test_no_headers_at_all_is_an_error_naming_the_package(no_kernel_build_dir, capsys):
    with pytest.raises(headers.EnvironmentProblem) as error:
        headers.ensure_kernel_source()
    assert "linux-headers" in error.value.hint
    assert capsys.readouterr().err == ""


def test_merged_tree_links_whole_directories_and_later_sources_win(tmp_path):
    common, arch = tmp_path / "common", tmp_path / "arch"
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "kconfig.h").write_text("common")
    (common / "include" / "shared.h").write_text("common")
    (arch / "include" / "generated").mkdir(parents=True)
    (arch / "include" / "generated" / "autoconf.h").write_text("arch")
    (arch / "include" / "shared.h").write_text("arch")
    merged = tmp_path / "merged"
    headers._merge_tree((str(common), str(arch)), merged)
    assert (merged / "include").is_dir() and not (merged / "include").is_symlink()  # in both: merged
    assert (merged / "include" / "linux").is_symlink()  # in one: one link, not one per header
    assert (merged / "include" / "linux" / "kconfig.h").read_text() == "common"
    assert (merged / "include" / "generated" / "autoconf.h").read_text() == "arch"
    assert (merged / "include" / "shared.h").read_text() == "arch"


def test_without_a_trusted_cache_the_tree_is_made_for_this_run(no_kernel_build_dir, monkeypatch):
    debian_layout(no_kernel_build_dir / "src")
    cache_dir = no_kernel_build_dir / "cache"
    cache_dir.mkdir()
    os.chmod(cache_dir, 0o777)  # others could plant headers root would compile against
    monkeypatch.setattr(headers.cache, "_warned", False)
    used = headers.ensure_kernel_source(announce=lambda message: None)
    assert not used.startswith(str(cache_dir)), used
    assert os.path.isfile(os.path.join(used, "include", "linux", "kconfig.h"))


def test_kernel_addresses_become_hex_literals_c_reads_as_unsigned():
    flags = source.cflags({"VMEMMAP_BASE_ADDR": 0xFFFFFFFF82A1C0B8, "MIN_SIZE": 16})
    assert flags[:2] == ["-DMIN_SIZE=16", "-DVMEMMAP_BASE_ADDR=0xffffffff82a1c0b8"]
