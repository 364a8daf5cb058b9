"""Captures /proc samples the way `leaktrace triage` reads them, for unit tests.

    capture.py OUT_DIR --samples 4 --interval 1 --pid 123 --pid 456

writes OUT_DIR/sample-N/{uptime,meminfo,slabinfo,vmallocinfo,PID/...} and
OUT_DIR/slab/CACHE/reclaim_account. Files the caller may not read are left
out, exactly as triage would meet them (run it as a non-root user to capture
that case). Only the named processes are kept, and the hashed addresses in
vmallocinfo (random, never read by triage) are zeroed, to keep captures small.
Archive a capture with `tar -czf NAME.tar.gz -C OUT_DIR .`.
"""
import argparse
import shutil
import time
from pathlib import Path

SYSTEM_FILES = ("uptime", "meminfo", "slabinfo", "vmallocinfo")
PROCESS_FILES = ("status", "smaps_rollup", "cgroup")


ZERO_RANGE = b"0x0000000000000000-0x0000000000000000"


def zero_addresses(vmallocinfo: bytes) -> bytes:
    return b"\n".join(ZERO_RANGE + line[len(ZERO_RANGE):] if line.startswith(b"0x") else line
                      for line in vmallocinfo.split(b"\n"))


def copy_if_readable(source: Path, target: Path) -> None:
    try:
        data = source.read_bytes()
    except OSError:
        return
    if source.name == "vmallocinfo":
        data = zero_addresses(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def capture_sample(out: Path, pids) -> None:
    out.mkdir(parents=True)
    for name in SYSTEM_FILES:
        copy_if_readable(Path("/proc") / name, out / name)
    for pid in pids:
        for name in PROCESS_FILES:
            copy_if_readable(Path(f"/proc/{pid}/{name}"), out / str(pid) / name)


def capture_slab_flags(out: Path) -> None:
    for cache in Path("/sys/kernel/slab").iterdir():
        if not cache.name.startswith(":"):  # ":0000024" are merged-cache ids
            copy_if_readable(cache / "reclaim_account", out / "slab" / cache.name / "reclaim_account")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pid", type=int, action="append", default=[])
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    start = time.monotonic()
    for index in range(args.samples):
        delay = start + index * args.interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        capture_sample(args.out / f"sample-{index}", args.pid)
    capture_slab_flags(args.out)


if __name__ == "__main__":
    main()
