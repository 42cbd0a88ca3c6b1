"""Helpers every layer may use, importing nothing from attnlab: field validators and argparse
types (`validators`), the one registration idiom (`registry`), lazily loaded public names (`lazy`),
units (`units`).

The bottom of the dependency order (docs/architecture.md): kernels, archs and every job import
from here; nothing here imports them.
"""

from .lazy import lazy_exports
from .registry import Registry
from .units import human_bytes
from .validators import positive_int

__all__ = ["Registry", "human_bytes", "lazy_exports", "positive_int"]
