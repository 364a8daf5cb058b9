"""How leaktrace writes sizes and ages for people: the one place for units.

Binary units (8.0 KiB, 1.0 MiB); a value that would round to 1024 of a unit
moves up one (1.0 MiB, never "1024.0 KiB"). Whole bytes below 1 KiB. Ages
compact: 12.3s, 4m05s, 2h03m.
"""
from __future__ import annotations

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(n: float) -> str:
    if abs(n) < 1024:
        return f"{n:.0f} B"
    value = float(n)
    for unit in UNITS[1:]:
        value /= 1024
        if abs(value) < 1023.95 or unit == UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
