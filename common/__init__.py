"""Helpers every layer may use, importing nothing from attnlab: field validators and argparse
types (`validators`), the one registration idiom (`registry`), units (`units`).

The bottom of the dependency order (docs/architecture.md): kernels, archs and every job import
from here; nothing here imports them.
"""

from .registry import Registry
from .units import human_bytes
from .validators import positive_int

__all__ = ["Registry", "human_bytes", "positive_int"]
