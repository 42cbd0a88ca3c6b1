"""The bottom layer (attnlab.common): the Registry every folder registers through, lazily loaded
public names, the shared validators' messages, and units."""

from __future__ import annotations

import argparse
import sys
import types

import pytest

from attnlab.common import (
    Registry,
    check_choice,
    check_fraction,
    check_positive_int,
    human_bytes,
    lazy_exports,
    positive_int,
)


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A registry declared in one module and filled by another, as archs/families.py and a family
    file are: (the registry, the list the filling module appends to when it is imported)."""
    (tmp_path / "widget_registry.py").write_text(
        "from attnlab.common import Registry\n"
        "IMPORTS = []\n"
        "WIDGETS = Registry('widget', modules=['widget_impl'])\n"
    )
    (tmp_path / "widget_impl.py").write_text(
        "from widget_registry import IMPORTS, WIDGETS\n"
        "IMPORTS.append(1)\n"
        "WIDGETS.register('b', 'B')\n"
        "@WIDGETS.register('a')\n"
        "def a():\n"
        "    return 'A'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("widget_registry", "widget_impl"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import widget_registry

    yield widget_registry.WIDGETS, widget_registry.IMPORTS
    for name in ("widget_registry", "widget_impl"):
        sys.modules.pop(name, None)


def test_a_registry_loads_its_modules_on_first_lookup_only(plugin_module):
    registry, calls = plugin_module
    assert calls == []  # declaring it imported nothing
    assert registry.names() == ["b", "a"]  # registration order
    assert "a" in registry and len(registry) == 2 and registry.get("b") == "B"
    registry.names()
    assert calls == [1]  # loaded once


def test_an_unknown_name_lists_what_is_allowed(plugin_module):
    registry, _ = plugin_module
    with pytest.raises(ValueError, match=r"^data.x = 'c' is not a known widget; allowed: b, a$"):
        registry.get("c", where="data.x")


def test_registering_a_name_twice_fails():
    registry = Registry("widget")
    registry.register("a", 1)
    with pytest.raises(AssertionError, match="widget 'a' registered twice"):
        registry.register("a", 2)


def test_lazy_exports_load_on_first_use_and_rename(monkeypatch):
    package = types.ModuleType("fake_pkg")
    leaf = types.ModuleType("fake_pkg.leaf")
    leaf.thing, leaf.other = "thing", "other"
    monkeypatch.setitem(sys.modules, "fake_pkg", package)
    monkeypatch.setitem(sys.modules, "fake_pkg.leaf", leaf)
    package.__getattr__ = lazy_exports("fake_pkg", {"thing": "leaf", "renamed": "leaf:other"})
    assert package.__getattr__("thing") == "thing" and package.thing == "thing"  # cached on the package
    assert package.__getattr__("renamed") == "other"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        package.__getattr__("nope")


def test_validators_name_the_field_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"^optim.warmup = True: must be a positive integer$"):
        check_positive_int(True, "optim.warmup")  # YAML's true is not 1
    with pytest.raises(ValueError, match=r"^trainer.precision = 'x'; allowed: 32, bf16$"):
        check_choice("x", ("32", "bf16"), "trainer.precision")
    with pytest.raises(ValueError, match=r"must be a number in \[0, 1\)"):
        check_fraction(1.0, "data.val_fraction", "[0, 1)")
    check_fraction(1.0, "mqar.power_a")  # (0, 1] by default
    assert positive_int("3") == 3
    for bad in ("0", "-2", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)


def test_human_bytes():
    assert [human_bytes(n) for n in (12, 1536, 3 << 20, 5 << 30)] == ["12 B", "1.5 KiB", "3.0 MiB", "5.0 GiB"]
