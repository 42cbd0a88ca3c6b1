"""Imports every mixer family so it registers itself. Adding a family: one file + one line here."""

from . import (
    full,  # noqa: F401
    intra,  # noqa: F401
    lightning,  # noqa: F401
    mla,  # noqa: F401
    swa,  # noqa: F401
)
