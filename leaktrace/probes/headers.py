"""Find kernel headers bcc can compile against, without writing to /lib/modules.

bcc looks for /lib/modules/$(uname -r)/build. Distributions ship headers for
their own kernels only, and a cloud or custom kernel often has none. Uprobe
and tracepoint programs do not depend on kernel struct layouts, so the
distribution's default headers work: a whole tree under /usr/src (Ubuntu's
linux-headers-X-generic, Fedora's kernels/X) as it is, or the split Debian
layout (linux-headers-X-common + linux-headers-X-amd64) merged into a tree of
symlinks in the cache's kernel-headers/ directory (leaktrace/base/cache.py). Either is passed to bcc as BCC_KERNEL_SOURCE,
with one line on stderr saying which.
"""
from __future__ import annotations

import atexit
import glob
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from ..base import cache
from ..base.errors import EnvironmentProblem

_ARCH_SUFFIX = {"x86_64": "amd64", "aarch64": "arm64"}


def headers_package_hint() -> str:
    release = platform.release()
    arch = _ARCH_SUFFIX.get(platform.machine(), platform.machine())
    return (
        f"install kernel headers: apt-get install linux-headers-{release} "
        f"(or linux-headers-{arch} / linux-headers-generic), or run scripts/setup.sh"
    )


def _source_root() -> str:
    # Tests point this elsewhere to simulate a machine without headers.
    return os.environ.get("LEAKTRACE_HEADERS_SEARCH", "/usr/src")


def find_split_headers() -> Optional[tuple]:
    """The newest (common, arch) pair of Debian header folders, or None."""
    arch = _ARCH_SUFFIX.get(platform.machine(), platform.machine())
    root = _source_root()
    pairs = []
    for arch_dir in glob.glob(os.path.join(root, f"linux-headers-*-{arch}")):
        common = arch_dir[: -len(arch)] + "common"
        if os.path.isdir(common):
            pairs.append((common, arch_dir))
    if not pairs:
        return None
    return max(pairs, key=lambda pair: os.path.basename(pair[1]))


def find_whole_headers() -> Optional[str]:
    """A single folder with include/linux and a Makefile (Ubuntu, Fedora)."""
    candidates = sorted(glob.glob(os.path.join(_source_root(), "linux-headers-*")))
    candidates += sorted(glob.glob(os.path.join(_source_root(), "kernels", "*")))
    for path in reversed(candidates):
        if os.path.isfile(os.path.join(path, "include/linux/kconfig.h")) and os.path.isfile(
            os.path.join(path, "include/generated/autoconf.h")
        ):
            return path
    return None


def _merge_into(sources: list, target: Path) -> None:
    """target holds every entry of the sources (later ones win): a directory that
    several sources have is merged; anything else is one symlink to its source."""
    target.mkdir()
    entries: dict = {}
    for source in sources:
        with os.scandir(source) as listing:
            for entry in listing:
                entries.setdefault(entry.name, []).append(entry)
    for name, found in entries.items():
        if len(found) > 1 and all(e.is_dir(follow_symlinks=False) for e in found):
            _merge_into([e.path for e in found], target / name)
        else:
            (target / name).symlink_to(os.path.realpath(found[-1].path))


def _merge_tree(sources: tuple, dest: Path) -> None:
    """A merged tree of sources at dest, made aside and renamed into place
    (Debian's pair needs about 60 entries, not one per header)."""
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    _merge_into(list(sources), tmp)
    os.replace(tmp, dest)


def _merged_tree(pair: tuple) -> Path:
    """The merged tree of pair, kept in the cache, or for this run only when
    there is no trusted cache (compiling as root must never read a tree others
    could have planted)."""
    directory = cache.directory("kernel-headers")
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="leaktrace-headers-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    merged = directory / os.path.basename(pair[1])
    if not merged.is_dir():
        _merge_tree(pair, merged)
    return merged


def ensure_kernel_source(announce=lambda msg: print(msg, file=sys.stderr)) -> Optional[str]:
    """Set BCC_KERNEL_SOURCE when bcc would not find headers by itself.

    Returns the folder used, or None when bcc's default lookup works.
    Raises EnvironmentProblem when there are no usable headers at all.
    """
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return os.environ["BCC_KERNEL_SOURCE"]
    if os.path.exists(f"/lib/modules/{platform.release()}/build/include"):
        return None
    whole = find_whole_headers()
    if whole is not None:
        found = f"{os.path.basename(whole)} (in {whole})"
    else:
        pair = find_split_headers()
        if pair is None:
            raise EnvironmentProblem(
                f"no kernel headers for {platform.release()} found "
                f"(/lib/modules/{platform.release()}/build is missing)",
                hint=headers_package_hint(),
            )
        merged = _merged_tree(pair)
        whole = str(merged)
        found = f"{os.path.basename(pair[1])} (merged in {merged})"
    announce(f"leaktrace: no headers for kernel {platform.release()}; compiling against {found}")
    os.environ["BCC_KERNEL_SOURCE"] = whole
    return whole
