"""Human-readable units for reports and progress lines."""

from __future__ import annotations


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary prefixes, one decimal; bytes as an integer)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
