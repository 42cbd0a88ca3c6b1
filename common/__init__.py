"""Helpers every layer may use, importing nothing from attnlab: field validators and argparse
types (`validators`), the one registration idiom (`registry`), lazily loaded public names (`lazy`),
units (`units`), the filters for other libraries' start-up noise (`quiet`).

The bottom of the dependency order (docs/architecture.md): kernels, archs and every job import
from here; nothing here imports them.
"""

from .lazy import lazy_exports
from .quiet import quiet_torchao_import
from .registry import Registry
from .units import human_bytes
from .validators import (
    check_bool,
    check_choice,
    check_fraction,
    check_int_list,
    check_number,
    check_positive,
    check_positive_int,
    check_subset,
    fail,
    is_int,
    is_number,
    positive_int,
)

__all__ = [
    "Registry",
    "check_bool",
    "check_choice",
    "check_subset",
    "check_fraction",
    "check_int_list",
    "check_number",
    "check_positive",
    "check_positive_int",
    "fail",
    "human_bytes",
    "is_int",
    "is_number",
    "lazy_exports",
    "positive_int",
    "quiet_torchao_import",
]
