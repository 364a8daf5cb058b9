"""Debian's cloud kernels for the matrix: found, downloaded and unpacked once.

A private apt set-up (its own sources list, package lists and cache under the
matrix cache directory) reads the suites that carry the kernels (bullseye 5.10,
bookworm 6.1, trixie 6.12, trixie-backports 6.18) without touching the host's
apt configuration. For a series such as "6.1" the newest
linux-image-6.1*-cloud-amd64 is taken, with its headers package and their
common headers when Debian still serves them (old backports keep only the
image: the guest then compiles against leaktrace's fallback headers). Each
kernel is unpacked under kernels/<release>/ and marked complete last, so an
interrupted download is redone, never half used.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

MIRROR = "http://deb.debian.org/debian"
SUITES = ("bullseye", "bookworm", "bookworm-backports", "trixie", "trixie-backports")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
FLAVOUR = "cloud-amd64"
LISTS_MAX_AGE_S = 24 * 3600
APT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Kernel:
    series: str  # as asked for, e.g. "6.1"
    release: str  # uname -r, e.g. "6.1.0-50-cloud-amd64"
    root: Path  # the unpacked packages: boot/, lib/modules/, usr/src/
    has_headers: bool

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        """lib/modules/<release>, under usr/ in merged-/usr packages (trixie)."""
        for base in (self.root / "lib", self.root / "usr" / "lib"):
            if (base / "modules" / self.release).is_dir():
                return base / "modules" / self.release
        raise FileNotFoundError(f"no modules directory for {self.release} under {self.root}")


def cache_root() -> Path:
    return Path(os.environ.get("LEAKTRACE_MATRIX_CACHE", "/var/cache/leaktrace/kernel-matrix"))


def sources_list() -> str:
    return "".join(f"deb [signed-by={KEYRING}] {MIRROR} {suite} main\n" for suite in SUITES)


def release_of(package: str) -> Optional[str]:
    """linux-image-6.1.0-50-cloud-amd64 -> 6.1.0-50-cloud-amd64."""
    found = re.fullmatch(r"linux-image-(\d\S*-" + re.escape(FLAVOUR) + ")", package)
    return found.group(1) if found else None


def in_series(release: str, series: str) -> bool:
    """6.1.0-50-... is in 6.1, 6.12.117+deb13-... is not."""
    return re.match(re.escape(series) + r"(?=[.+-])", release) is not None


def version_key(release: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", release[: -len(FLAVOUR)]))


def newest_release(packages: Iterable[str], series: str) -> Optional[str]:
    """The newest cloud kernel of the series among package names; None if none."""
    releases = [r for r in map(release_of, packages) if r and in_series(r, series)]
    return max(releases, key=version_key, default=None)


def common_headers(depends: str) -> Optional[str]:
    """The linux-headers-*-common package named in a headers package's Depends."""
    found = re.search(r"\b(linux-headers-\S+-common)\b", depends)
    return found.group(1) if found else None


class Apt:
    """apt-get/apt-cache with the private sources, lists and cache."""

    def __init__(self, root: Path):
        self.root = root
        self.debs = root / "debs"

    def _options(self) -> List[str]:
        return ["-o", f"Dir::Etc::sourcelist={self.root / 'sources.list'}",
                "-o", "Dir::Etc::sourceparts=-",
                "-o", f"Dir::State::Lists={self.root / 'lists'}",
                "-o", f"Dir::Cache={self.root / 'cache'}",
                "-o", "APT::Sandbox::User=root"]

    def _run(self, tool: str, *args: str, cwd: Optional[Path] = None) -> str:
        done = subprocess.run([tool, *self._options(), *args], capture_output=True, text=True,
                              cwd=cwd, timeout=APT_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()[-800:]}")
        return done.stdout

    def update(self, force: bool = False) -> None:
        """Refresh the package lists when they are missing or a day old."""
        stamp = self.root / "lists" / ".updated"
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE_S:
            return
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "sources.list").write_text(sources_list())
        self._run("apt-get", "update")
        (self.root / "lists" / "images.txt").unlink(missing_ok=True)
        stamp.touch()

    def images(self) -> List[str]:
        """Every cloud kernel image package, listed once per update of the lists."""
        listed = self.root / "lists" / "images.txt"
        if not listed.exists():
            listed.write_text("\n".join(self.packages(f"^linux-image-.*-{FLAVOUR}$")))
        return listed.read_text().split()

    def packages(self, pattern: str) -> List[str]:
        out = self._run("apt-cache", "search", "--names-only", pattern)
        return [line.split(" - ", 1)[0] for line in out.splitlines() if line.strip()]

    def depends(self, package: str) -> str:
        out = self._run("apt-cache", "show", "--no-all-versions", package)
        return " ".join(line for line in out.splitlines() if line.startswith("Depends:"))

    def download(self, package: str) -> Path:
        self.debs.mkdir(parents=True, exist_ok=True)
        found = sorted(self.debs.glob(f"{package}_*.deb"))
        if not found:
            self._run("apt-get", "download", package, cwd=self.debs)
            found = sorted(self.debs.glob(f"{package}_*.deb"))
        if not found:
            raise RuntimeError(f"apt-get download {package} left no .deb in {self.debs}")
        return found[-1]


def _unpack(debs: Sequence[Path], dest: Path) -> None:
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, timeout=APT_TIMEOUT_S)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


@contextlib.contextmanager
def _locked(root: Path):
    """One matrix run at a time updates, downloads and unpacks."""
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fetch(series: str, root: Optional[Path] = None, log=print) -> Kernel:
    """The newest Debian cloud kernel of series, unpacked (cached)."""
    root = root or cache_root()
    with _locked(root):
        return _fetch(series, Apt(root), root, log)


def _fetch(series: str, apt: Apt, root: Path, log) -> Kernel:
    apt.update()
    release = newest_release(apt.images(), series)
    if release is None:
        apt.update(force=True)
        release = newest_release(apt.images(), series)
    if release is None:
        raise RuntimeError(f"Debian serves no {FLAVOUR} kernel of series {series} in {', '.join(SUITES)}")
    dest = root / "kernels" / release
    done = dest / ".complete"
    if done.exists():
        return Kernel(series, release, dest, done.read_text().strip() == "headers")
    headers = [f"linux-headers-{release}"] if apt.packages(f"^linux-headers-{re.escape(release)}$") else []
    if headers:
        common = common_headers(apt.depends(headers[0]))
        headers += [common] if common else []
    log(f"downloading {release}{' with headers' if headers else ' (no headers package)'}")
    debs = [apt.download(p) for p in [f"linux-image-{release}", *headers]]
    _unpack(debs, dest)
    done.write_text("headers\n" if headers else "none\n")
    for deb in debs:
        deb.unlink()  # unpacked: the tree is the cache
    return Kernel(series, release, dest, bool(headers))
