"""The guest's initramfs: static busybox, guest_init.sh as /init, and the
kernel modules needed to reach the host's root (Debian's cloud kernels build
virtio-pci, virtiofs and overlayfs as modules, differently per release).

Modules are loaded with busybox insmod, which takes neither compressed files
nor dependencies: they are decompressed here and ordered by the `depends=`
strings of their .modinfo sections (packages carry no modules.dep; depmod runs
at install time).
"""
from __future__ import annotations

import io
import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Sequence

from elftools.elf.elffile import ELFFile

# What guest_init.sh needs beyond the built-in drivers: PCI virtio, virtiofs, overlayfs.
WANTED = ("virtio_pci", "virtiofs", "overlay")
BUSYBOX = "/bin/busybox"
INIT = Path(__file__).resolve().parent / "guest_init.sh"


def module_name(path: str) -> str:
    """kernel/fs/fuse/virtiofs.ko.xz -> virtiofs (dashes read as underscores)."""
    base = os.path.basename(path)
    return base[: base.index(".ko")].replace("-", "_")


def index_modules(modules_dir: Path) -> Dict[str, Path]:
    return {module_name(str(path)): path for path in (modules_dir / "kernel").rglob("*.ko*")}


def builtin_modules(modules_dir: Path) -> frozenset:
    listed = modules_dir / "modules.builtin"
    lines = listed.read_text().split() if listed.exists() else []
    return frozenset(module_name(line) for line in lines)


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


def module_depends(image: bytes) -> List[str]:
    """The names in a module's `depends=` modinfo string."""
    section = ELFFile(io.BytesIO(image)).get_section_by_name(".modinfo")
    for entry in (section.data() if section else b"").split(b"\0"):
        if entry.startswith(b"depends="):
            return [n.replace("-", "_") for n in entry[8:].decode().split(",") if n]
    return []


def load_order(wanted: Iterable[str], depends_of: Callable[[str], Sequence[str]],
               builtin: Iterable[str] = ()) -> List[str]:
    """wanted and their dependencies, each after what it depends on; built-in ones left out."""
    builtin = frozenset(builtin)
    order: List[str] = []

    def visit(name: str, path: tuple) -> None:
        if name in builtin or name in order:
            return
        if name in path:
            raise ValueError(f"module dependency cycle: {' -> '.join(path + (name,))}")
        for dependency in depends_of(name):
            visit(dependency, path + (name,))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def build(modules_dir: Path, settings: Dict[str, str], out: Path) -> List[str]:
    """Write the initramfs to out; returns the modules it loads, in order."""
    index = index_modules(modules_dir)
    builtin = builtin_modules(modules_dir)
    images: Dict[str, bytes] = {}

    def depends_of(name: str) -> List[str]:
        if name not in index:
            raise FileNotFoundError(f"module {name} is neither built in nor in {modules_dir}")
        images[name] = read_module(index[name])
        return module_depends(images[name])

    if any("'" in value for value in settings.values()):
        raise ValueError(f"a guest setting holds a quote: {settings}")
    order = load_order(WANTED, depends_of, builtin)
    with tempfile.TemporaryDirectory(prefix="initramfs.") as tmp:
        stage = Path(tmp)
        for sub in ("bin", "modules", "proc", "sys", "dev", "lower", "rw", "newroot"):
            (stage / sub).mkdir()
        shutil.copy2(BUSYBOX, stage / "bin" / "busybox")
        shutil.copy2(INIT, stage / "init")
        (stage / "init").chmod(0o755)
        for name in order:
            (stage / "modules" / f"{name}.ko").write_bytes(images[name])
        (stage / "modules" / "order").write_text("".join(f"{n}\n" for n in order))
        (stage / "matrix.env").write_text("".join(f"{k}='{v}'\n" for k, v in sorted(settings.items())))
        names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
        with open(out, "wb") as archive:
            subprocess.run([BUSYBOX, "cpio", "-o", "-H", "newc"], input="\n".join(names).encode(),
                           stdout=archive, stderr=subprocess.DEVNULL, cwd=stage, check=True)
    return order
