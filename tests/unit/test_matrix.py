"""The kernel matrix's pure parts (tests/matrix): which Debian kernel a series
means, module load order, the guest's command line and results, the table.
The guests themselves run in tests/integration/test_kernel_matrix.py."""
import subprocess
import sys
from pathlib import Path

import pytest

from matrix import initramfs, kernels
from matrix.__main__ import kernel_budget, problem_of
from matrix.guest import Guest, GuestConfig, parse_results, qemu_command
from matrix.table import KernelRun, merge_runs, render, render_markdown

# Package names as `apt-cache search` listed them on 2026-12-07 (a sample).
PACKAGES = [
    "linux-image-5.10.0-30-cloud-amd64", "linux-image-5.10.0-32-cloud-amd64",
    "linux-image-6.1.0-47-cloud-amd64", "linux-image-6.1.0-50-cloud-amd64",
    "linux-image-6.12.43+deb12-cloud-amd64", "linux-image-6.12.117+deb13-cloud-amd64",
    "linux-image-6.12.90+deb12.1-cloud-amd64", "linux-image-6.18.5+deb13-cloud-amd64",
    "linux-image-6.18.15+deb13-cloud-amd64", "linux-image-6.19.14+deb13-cloud-amd64",
    "linux-image-cloud-amd64", "linux-image-6.1.0-50-cloud-amd64-dbg", "linux-image-6.1.0-50-amd64",
]


@pytest.mark.parametrize("series, release", [
    ("5.10", "5.10.0-32-cloud-amd64"), ("6.1", "6.1.0-50-cloud-amd64"),
    ("6.12", "6.12.117+deb13-cloud-amd64"), ("6.18", "6.18.15+deb13-cloud-amd64"), ("4.19", None),
])
def test_newest_cloud_kernel_of_a_series(series, release):
    assert kernels.newest_release(PACKAGES, series) == release


def test_a_series_is_not_a_prefix_of_another():
    assert kernels.in_series("6.1.0-50-cloud-amd64", "6.1")
    assert not kernels.in_series("6.12.117+deb13-cloud-amd64", "6.1")
    assert not kernels.in_series("6.18.15+deb13-cloud-amd64", "6.1")


def test_common_headers_from_depends():
    depends = ("Depends: linux-headers-6.1.0-50-common (= 6.1.176-1), linux-kbuild-6.1 (>= 6.1.176-1), "
               "linux-compiler-gcc-12-x86")
    assert kernels.common_headers(depends) == "linux-headers-6.1.0-50-common"
    assert kernels.common_headers("Depends: linux-base (>= 4.12~), gcc-14") is None


def test_private_sources_are_signed_by_debians_keyring():
    lines = kernels.sources_list().splitlines()
    assert len(lines) == len(kernels.SUITES)
    assert all(line.startswith(f"deb [signed-by={kernels.KEYRING}] http") for line in lines)


def test_modules_load_after_their_dependencies_and_built_ins_are_left_out():
    depends = {"virtio_pci": ["virtio_pci_modern_dev", "virtio", "virtio_ring"],
               "virtio_pci_modern_dev": [], "virtio": [], "virtio_ring": [],
               "virtiofs": ["fuse", "virtio", "virtio_ring"], "fuse": [], "overlay": []}
    order = initramfs.load_order(initramfs.WANTED, depends.__getitem__)
    assert sorted(order) == sorted(depends)
    assert all(order.index(dep) < order.index(mod) for mod, deps in depends.items() for dep in deps)
    built_in = initramfs.load_order(initramfs.WANTED, depends.__getitem__, builtin={"fuse", "virtio"})
    assert "fuse" not in built_in and "virtio" not in built_in and "virtiofs" in built_in


def test_a_dependency_cycle_is_an_error():
    with pytest.raises(ValueError, match="cycle"):
        initramfs.load_order(["a"], {"a": ["b"], "b": ["a"]}.__getitem__)


def test_module_names_and_depends_from_a_real_modinfo_section(tmp_path):
    assert initramfs.module_name("kernel/drivers/virtio/virtio-pci.ko.xz") == "virtio_pci"
    source = tmp_path / "mod.c"
    source.write_text('__attribute__((section(".modinfo"), used)) static const char info[] = '
                      '"license=GPL\\0depends=virtio,virtio-ring\\0vermagic=6.1";\n')
    subprocess.run(["gcc", "-c", str(source), "-o", str(tmp_path / "mod.ko")], check=True)
    image = initramfs.read_module(tmp_path / "mod.ko")
    assert initramfs.module_depends(image) == ["virtio", "virtio_ring"]


def kernel(tmp_path: Path) -> kernels.Kernel:
    return kernels.Kernel("6.1", "6.1.0-50-cloud-amd64", tmp_path, True)


def test_qemu_shares_the_host_root_and_reports_on_a_second_serial_port(tmp_path):
    command = qemu_command(kernel(tmp_path), tmp_path / "initrd", tmp_path / "vfs.sock",
                           tmp_path / "console.log", tmp_path / "results", "tcg", GuestConfig(Path("/repo")))
    text = " ".join(command)
    assert "-accel tcg,thread=single" in text and "-no-reboot" in text and "panic=-1" in text
    assert f"socket,id=vfs,path={tmp_path / 'vfs.sock'}" in text and "tag=host" in text
    assert "share=on" in text  # vhost-user needs shared guest memory
    serials = [command[i + 1] for i, word in enumerate(command) if word == "-serial"]
    assert serials == [f"file:{tmp_path / 'console.log'}", f"file:{tmp_path / 'results'}"]


def test_results_survive_serial_line_endings_and_cut_lines():
    text = ('{"kernel": {"release": "6.1.0-50-cloud-amd64"}}\r\n'
            '{"check": "run", "status": "PASS", "seconds": 160.0, "detail": "", "warnings": []}\r\n'
            '{"check": "attach", "sta')
    parsed = parse_results(text)
    assert parsed["kernel"]["release"] == "6.1.0-50-cloud-amd64"
    assert [r["check"] for r in parsed["checks"]] == ["run"] and not parsed["done"]
    assert problem_of(dict(parsed, ended="poweroff"), "x\n[ 9.1] Kernel panic\n").endswith("Kernel panic")
    assert problem_of(dict(parsed, ended="timeout"), "") == "guest timed out"
    assert problem_of(dict(parsed, done=True, ended="poweroff"), "") == ""


def test_a_guest_gets_room_for_every_check_unless_the_kernel_timeout_is_shorter():
    assert kernel_budget(None, "tcg", 900, 8) == 300 + 900 * 8
    assert kernel_budget(None, "kvm", 300, 2) == 120 + 300 * 2
    assert kernel_budget(2700, "tcg", 900, 8) == 2700  # CI: the whole guest within 45 minutes


def test_table_has_a_column_per_kernel_and_reasons_below():
    ok = KernelRun("6.1", "6.1.0-50-cloud-amd64", "tcg", "debian", {
        "run": {"check": "run", "status": "PASS", "seconds": 160.2, "summary": "", "detail": "",
                "warnings": []},
        "kernel": {"check": "kernel", "status": "SKIP", "seconds": 1, "summary": "no slab names",
                   "detail": "", "warnings": []}}, seconds=400)
    broken = KernelRun("5.10", "5.10.0-32-cloud-amd64", "tcg", "debian", problem="guest timed out")
    text = render([ok, broken], ["run", "kernel"])
    header, rule, run_row, kernel_row = text.splitlines()[:4]
    assert header.split() == ["check", "6.1", "(tcg)", "5.10", "(tcg)"]
    assert run_row.split() == ["run", "PASS", "160s", "FAIL"]
    assert "6.1 (tcg) kernel SKIP: no slab names" in text
    assert "5.10 (tcg) run FAIL: guest timed out" in text
    assert not ok.failed and broken.failed


def test_readme_table_says_how_each_kernel_is_probed_and_what_degrades():
    def passed(check, warnings=(), probes=()):
        return {"check": check, "status": "PASS", "seconds": 9, "summary": "", "detail": "",
                "warnings": list(warnings), "probes": list(probes)}
    old = KernelRun("5.10", "5.10.0-32-cloud-amd64", "tcg", "debian", {
        "run": passed("run", ["3 records were replaced"], ["per-thread call state in a thread-id hash"]),
        "kernel": passed("kernel", ["not traced: vmalloc: tracepoint vmalloc:alloc_vmap_area does not "
                                    "exist on this kernel"])},
        facts={"kernel_mode": {"probes": ["slab cache names read from each object's slab page"],
                               "notes": ["not traced: vmalloc: tracepoint vmalloc:alloc_vmap_area does not "
                                         "exist on this kernel", "percpu: sizes are per CPU"]}})
    text = render_markdown([old], ["run", "kernel", "cfi"], "2026-12-07")
    assert text.startswith("Measured 2026-12-07 with `scripts/kernel-matrix.sh` (run, kernel, cfi).")
    row = text.splitlines()[-1]
    assert row.startswith("| 5.10: `5.10.0-32-cloud-amd64` (tcg) | 2/3 pass (not: cfi) | "
                          "per-thread call state in a thread-id hash; slab cache names read from each "
                          "object's slab page | not traced: vmalloc")
    assert row.count("not traced: vmalloc") == 1  # the check's report and kernel mode's plan say it once
    assert "replaced" not in row and "percpu" not in row  # not about this kernel


def test_a_check_run_again_replaces_its_result_and_the_readme_says_so():
    def record(check, status):
        return {"check": check, "status": status, "seconds": 9, "summary": "", "detail": "", "warnings": []}
    full = KernelRun("5.10", "5.10.0-32-cloud-amd64", "tcg", "debian",
                     {"run": record("run", "PASS"), "triage": record("triage", "FAIL")}, seconds=900)
    other = KernelRun("6.12", "6.12.117+deb13-cloud-amd64", "tcg", "debian", {"run": record("run", "PASS")})
    again = KernelRun("5.10", "5.10.0-32-cloud-amd64", "tcg", "debian", {"triage": record("triage", "PASS")},
                      seconds=200)
    merged = merge_runs([full, other, again])
    assert [run.series for run in merged] == ["5.10", "6.12"]
    assert {c: r["status"] for c, r in merged[0].results.items()} == {"run": "PASS", "triage": "PASS"}
    assert merged[0].rerun == ["triage"] and merged[0].seconds == 1100 and not merged[0].failed
    row = render_markdown(merged, ["run", "triage"], "2026-12-07").splitlines()[4]
    assert "| 2/2 pass (triage run again alone) |" in row


@pytest.mark.parametrize("accel, console, ended", [
    ("kvm", "", "kvm-failed"),  # QEMU gave up before the guest said anything: try TCG
    ("kvm", "matrix-guest: booted\n", "poweroff"),  # the guest ran: its results stand
    ("tcg", "", "poweroff"),
])
def test_a_qemu_that_exits_silently_under_kvm_is_a_kvm_failure(accel, console, ended):
    guest = Guest(kernel=None, config=None, accel=accel)
    (guest.dir / "console.log").write_text(console)
    guest._procs = [subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('qemu: failed to set MSR')"],
                                     stderr=subprocess.DEVNULL)]
    try:
        assert guest.wait(60)["ended"] == ended
    finally:
        guest.close()
