"""OOM check: pure assessment of settings, and reading this machine's real ones."""
from dataclasses import replace
from pathlib import Path

import pytest

from leaktrace.triage.oom import (BigProcess, OomSettings, assess, console_seconds,
                                  read_oom_settings, serial_console)

QUIET = OomSettings(
    oom_dump_tasks=1, process_count=2000, console_loglevel=4, serial_console="ttyS0",
    serial_baud=115200, baud_given=True, panic_on_oom=0, kernel_panic=0, overcommit_memory=0,
    commit_limit=8 << 30, committed=2 << 30,
    biggest=(BigProcess(10, "postgres", 4 << 30, 900, 0), BigProcess(1, "init", 1 << 20, 0, -1000)),
)


def by_setting(checks):
    return {c.setting: c for c in checks}


def test_serial_console_and_baud_from_cmdline():
    assert serial_console("quiet console=ttyS0,19200n8 root=/dev/sda", "") == ("ttyS0", 19200, True)
    assert serial_console("console=tty0 console=ttyS1", "") == ("ttyS1", 9600, False)
    assert serial_console("console=tty0", "") == (None, 0, False)
    # after "--" the words belong to init, not to the kernel
    assert serial_console("quiet -- console=ttyS0,9600", "") == (None, 0, False)
    assert serial_console("console=ttyS0", "tty0 -WU (EC p) 4:7\n") == (None, 0, False)


def test_slow_serial_console_with_verbose_loglevel_is_a_risk():
    loud = replace(QUIET, console_loglevel=8, serial_baud=19200)
    # ~4 KiB header + 2000 task lines of ~110 bytes at 1920 bytes/s
    assert console_seconds(loud) == pytest.approx((150 + 4096 + 2000 * 110) * 10 / 19200)
    checks = by_setting(assess(loud))
    assert checks["console"].status == "risk" and "oom_lock" in checks["console"].explanation
    assert checks["kernel.printk"].status == "risk"
    assert checks["vm.oom_dump_tasks"].status == "risk"
    assert "2000 task lines" in checks["vm.oom_dump_tasks"].explanation


def test_quiet_loglevel_keeps_the_console_fast():
    checks = by_setting(assess(QUIET))
    assert checks["console"].status == "ok"
    assert checks["vm.oom_dump_tasks"].status == "ok"
    assert "dmesg only" in checks["vm.oom_dump_tasks"].explanation


def test_panic_overcommit_and_unkillable_processes():
    checks = assess(replace(QUIET, panic_on_oom=1, kernel_panic=10, overcommit_memory=1))
    named = by_setting(checks)
    assert named["vm.panic_on_oom"].status == "risk" and "reboots after 10 s" in named["vm.panic_on_oom"].explanation
    assert named["vm.overcommit_memory"].status == "risk"
    adj = [c for c in checks if c.setting == "oom_score_adj"]
    assert [c.status for c in adj] == ["info", "risk"]
    assert "never OOM-killed" in adj[1].explanation
    strict = by_setting(assess(replace(QUIET, overcommit_memory=2)))["vm.overcommit_memory"]
    assert "8192 MiB" in strict.explanation and "ENOMEM" in strict.explanation


def test_every_explanation_is_one_line():
    for settings in (QUIET, replace(QUIET, console_loglevel=8, panic_on_oom=2, overcommit_memory=2)):
        assert all("\n" not in c.explanation for c in assess(settings))


def test_reads_this_machines_sysctls():
    settings = read_oom_settings()
    sysctl = Path("/proc/sys")
    assert settings.oom_dump_tasks == int((sysctl / "vm/oom_dump_tasks").read_text())
    assert settings.console_loglevel == int((sysctl / "kernel/printk").read_text().split()[0])
    assert settings.overcommit_memory == int((sysctl / "vm/overcommit_memory").read_text())
    assert settings.panic_on_oom == int((sysctl / "vm/panic_on_oom").read_text())
    assert settings.biggest and settings.biggest[0].rss >= settings.biggest[-1].rss


def test_task_lines_count_only_processes_the_kernel_would_dump(tmp_path):
    """dump_tasks skips init, kernel threads and tasks without memory."""
    def process(pid, name, rss_kib=None):
        d = tmp_path / str(pid)
        d.mkdir()
        status = f"Name:\t{name}\nState:\tS (sleeping)\n"
        if rss_kib is not None:
            status += f"VmRSS:\t{rss_kib} kB\nRssAnon:\t{rss_kib} kB\n"
        (d / "status").write_text(status)
        (d / "oom_score").write_text("0\n")
        (d / "oom_score_adj").write_text("0\n")

    process(1, "systemd", 12000)
    process(2, "kthreadd")
    process(57, "kworker/0:1")
    process(4242, "app", 900000)
    process(4243, "sshd", 8000)
    process(4300, "defunct")  # a zombie: no memory left
    settings = read_oom_settings(tmp_path)
    assert settings.process_count == 2
    assert [p.comm for p in settings.biggest][:2] == ["app", "systemd"]
