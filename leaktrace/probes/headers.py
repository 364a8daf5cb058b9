"""Find kernel headers bcc can compile against, without writing to /lib/modules.

bcc looks for /lib/modules/$(uname -r)/build. Distributions ship headers for
their own kernels only, and a cloud or custom kernel often has none. Uprobe
and tracepoint programs do not depend on kernel struct layouts, so the
distribution's default headers work: a whole tree under /usr/src (Ubuntu's
linux-headers-X-generic, Fedora's kernels/X) as it is, or the split Debian
layout (linux-headers-X-common + linux-headers-X-amd64) merged into a tree of
symlinks in a cache directory. Either is passed to bcc as BCC_KERNEL_SOURCE,
with one line on stderr saying which.
"""
from __future__ import annotations

import glob
import os
import platform
import sys
from pathlib import Path
from typing import Optional

from ..errors import EnvironmentProblem

_ARCH_SUFFIX = {"x86_64": "amd64", "aarch64": "arm64"}


def headers_package_hint() -> str:
    release = platform.release()
    arch = _ARCH_SUFFIX.get(platform.machine(), platform.machine())
    return (
        f"install kernel headers: apt-get install linux-headers-{release} "
        f"(or linux-headers-{arch} / linux-headers-generic), or run scripts/setup.sh"
    )


def cache_dir() -> Path:
    base = os.environ.get("LEAKTRACE_CACHE_DIR")
    if base:
        return Path(base)
    if os.geteuid() == 0:
        return Path("/var/cache/leaktrace")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "leaktrace"


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


def _merge_tree(sources: tuple, dest: Path) -> None:
    """Symlink every file of each source into dest; later sources win."""
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    for source in sources:
        for dirpath, dirnames, filenames in os.walk(source):
            rel = os.path.relpath(dirpath, source)
            target_dir = tmp / rel
            target_dir.mkdir(parents=True, exist_ok=True)
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                link = target_dir / name
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(os.path.realpath(os.path.join(dirpath, name)))
    os.replace(tmp, dest)


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
        merged = cache_dir() / "kernel-headers" / os.path.basename(pair[1])
        if not merged.is_dir():
            merged.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _merge_tree(pair, merged)
        whole = str(merged)
        found = f"{os.path.basename(pair[1])} (merged in {merged})"
    announce(f"leaktrace: no headers for kernel {platform.release()}; compiling against {found}")
    os.environ["BCC_KERNEL_SOURCE"] = whole
    return whole
