"""What the matrix records about the kernel a check ran on (one JSON object)."""
from __future__ import annotations

import os
import platform
from typing import Dict


def collect() -> Dict:
    return {
        "release": platform.release(),
        "btf": os.path.exists("/sys/kernel/btf/vmlinux"),
        "headers": os.path.isdir(f"/lib/modules/{platform.release()}/build/include"),
        "accel": os.environ.get("MATRIX_ACCEL", "host"),
    }
