"""Parsers over /proc text captured on this project's machines."""
import tarfile
from pathlib import Path

import pytest

from leaktrace.triage import procfs

DATA = Path(__file__).parents[1] / "data" / "triage"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    target = tmp_path_factory.mktemp("stable")
    with tarfile.open(DATA / "stable.tar.gz") as archive:
        archive.extractall(target)
    return target / "sample-0"


def test_slab_cache_size_is_slabs_times_pages(sample):
    text = (sample / "slabinfo").read_text()
    line = next(l for l in text.splitlines() if l.startswith("dentry "))
    fields, slabdata = line.split(), line.split("slabdata")[1].split()
    caches = procfs.parse_slabinfo(text)
    assert caches["dentry"].bytes == int(slabdata[1]) * int(fields[5]) * 4096
    assert caches["dentry"].objects == int(fields[1])
    assert caches["dentry"].object_size == int(fields[3])


def test_slab_total_matches_meminfo(sample):
    caches = procfs.parse_slabinfo((sample / "slabinfo").read_text())
    meminfo = procfs.parse_meminfo((sample / "meminfo").read_text())
    assert sum(c.bytes for c in caches.values()) == pytest.approx(meminfo["Slab"], rel=0.05)


def test_vmalloc_counts_pages_like_meminfo_and_skips_ioremap(sample):
    text = (sample / "vmallocinfo").read_text()
    callers = procfs.parse_vmallocinfo(text)
    meminfo = procfs.parse_meminfo((sample / "meminfo").read_text())
    assert sum(callers.values()) == pytest.approx(meminfo["VmallocUsed"], rel=0.01)
    assert "acpi_os_map_iomem" in text and "acpi_os_map_iomem" not in callers


def test_rollup_and_status_agree_on_a_live_process():
    rss, anon = procfs.parse_smaps_rollup(Path("/proc/self/smaps_rollup").read_text())
    name, status_rss, status_anon = procfs.parse_status(Path("/proc/self/status").read_text())
    assert name.startswith(("python", "pytest"))
    assert rss == pytest.approx(status_rss, rel=0.2) and anon == pytest.approx(status_anon, rel=0.2)


def test_unparseable_lines_are_ignored():
    assert procfs.parse_meminfo("garbage\nMemTotal: 10 kB\nHugePages_Total: 3\n") == {
        "MemTotal": 10240, "HugePages_Total": 3}
    assert procfs.parse_slabinfo("slabinfo - version: 2.1\nbroken line\n") == {}
    assert procfs.parse_vmallocinfo("0x1-0x2 4096 unpurged vm_area\n") == {}
