"""Validators shared by every config section, spec and command line, so a bad value reads the same
wherever it is caught: `<field> = <value>: <what is allowed>`.

Each `check_*` takes the value and `where`, the full dotted name of the field as the user wrote it
("optim.lr", "layers[2].num_heads", "mqar.seq_len"), and raises ValueError or returns None.
`positive_int` is the argparse type for the same rule on the command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any, NoReturn


def fail(where: str, value: Any, what: str) -> NoReturn:
    """The one error shape: the field, the value it got, and what it may be."""
    raise ValueError(f"{where} = {value!r}: {what}")


def is_number(value: Any) -> bool:
    """int or float, not bool (YAML's `true` must not pass as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_choice(value: Any, allowed: Iterable, where: str) -> None:
    """One of `allowed` (listed in the error)."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{where} = {value!r}; allowed: {', '.join(map(str, allowed))}")


def check_subset(values: Any, allowed: Iterable, flag: str) -> None:
    """A non-empty list of names, each one of `allowed` (a CLI list option such as --families)."""
    allowed = tuple(allowed)
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(f"{flag} {unknown or '(none)'}: allowed: {', '.join(map(str, allowed))}")


def check_positive_int(value: Any, where: str) -> None:
    if not is_int(value) or value <= 0:
        fail(where, value, "must be a positive integer")


def check_positive(value: Any, where: str, allow_zero: bool = False) -> None:
    """A number > 0 (>= 0 with allow_zero)."""
    if not is_number(value) or not (value >= 0 if allow_zero else value > 0):
        fail(where, value, f"must be a {'non-negative' if allow_zero else 'positive'} number")


def check_bool(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        fail(where, value, "must be true or false")


FRACTION_INTERVALS = ("[0, 1)", "(0, 1]")


def check_fraction(value: Any, where: str, interval: str = "(0, 1]") -> None:
    """A number in `interval`: "[0, 1)" (a share that may be zero: betas, val_fraction) or "(0, 1]"
    (a factor that may be whole: partial_rotary_factor, power_a)."""
    assert interval in FRACTION_INTERVALS, interval
    if not is_number(value) or not (0 <= value < 1 if interval == "[0, 1)" else 0 < value <= 1):
        fail(where, value, f"must be a number in {interval}")


def check_number(
    value: Any, where: str, lo: float = 0.0, hi: float | None = None, integer: bool = False
) -> None:
    """A number (an integer with `integer`) > lo and, when hi is given, <= hi."""
    ok = (is_int(value) if integer else is_number(value)) and value > lo and (hi is None or value <= hi)
    if not ok:
        what = "an integer" if integer else "a number"
        fail(where, value, f"must be {what} > {lo:g}" + (f" and <= {hi:g}" if hi is not None else ""))


def check_int_list(value: Any, where: str) -> None:
    """A non-empty list of positive integers (lengths, hop counts)."""
    if not isinstance(value, list) or not value:
        fail(where, value, "must be a non-empty list of positive integers")
    for i, item in enumerate(value):
        check_number(item, f"{where}[{i}]", integer=True)


def positive_int(text: str) -> int:
    """argparse type: an integer > 0, with an error that names the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected a positive integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive; expected a positive integer")
    return value
