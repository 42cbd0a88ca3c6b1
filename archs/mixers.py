"""Imports every mixer family so it registers itself. Adding a family: one file + one line here."""

from . import full  # noqa: F401
from . import lightning  # noqa: F401
from . import mla  # noqa: F401
from . import swa  # noqa: F401
from . import intra  # noqa: F401
