"""Imports every text-task generator so each registers itself (one line per task)."""

from . import copy_string, facts, ngram_lookup, niah, variable_tracking  # noqa: F401
