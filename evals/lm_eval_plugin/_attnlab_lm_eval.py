"""`lm_eval --model attnlab` with lm-eval's own, unchanged CLI.

lm-eval 0.4 looks `--model NAME` up in its model registry and has no plugin discovery, so an
out-of-tree model is unknown to the `lm_eval` command. attnlab's wheel therefore ships
`attnlab-lm-eval.pth` (the mechanism of setuptools' `distutils-precedence.pth`): at interpreter
start it imports this module, which only adds an import hook, imports nothing else and costs
microseconds. When (and if) `lm_eval.models` is imported, the hook registers `attnlab` in lm-eval's
registry as a lazy "module:Class" placeholder, which lm-eval's Registry supports natively; attnlab
and torch are imported only when lm-eval asks for the model. `ATTNLAB_LM_EVAL_PLUGIN=0` switches it off.

This file is a top-level module (not under `attnlab`) so that the hook never imports attnlab's
package `__init__` (torch, transformers) at interpreter start. The same start-up hook puts an
editable install's import finder first (`editable_first`), so a clone folder named `attnlab` in the
working directory does not shadow the package.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

WATCHED = "lm_eval.models"  # imported by lm-eval right before it first resolves a model name
ALIAS, TARGET = "attnlab", "attnlab.evals.lm_eval_model:AttnLabLM"


def register(registry=None) -> None:
    """Add the lazy `attnlab` entry to lm-eval's model registry (no-op if already there)."""
    if registry is None:
        from lm_eval.api.registry import model_registry as registry
    if ALIAS not in registry:
        registry.register(ALIAS, target=TARGET)


class _RegisterAfter(importlib.abc.Loader):
    """Runs the real loader, then registers `attnlab`."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        try:
            register()
        except Exception as err:  # an lm-eval without the lazy Registry: say so, never break lm-eval
            print(f"attnlab: could not register the lm-eval model: {err!r}", file=sys.stderr)

    def __getattr__(self, name):  # get_source, is_package, ... of the wrapped loader
        return getattr(self.inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != WATCHED:
            return None
        sys.meta_path.remove(self)  # one shot, and the lookup below must not find us again
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfter(spec.loader)
        return spec


def editable_first() -> None:
    """When the working directory holds a folder named `attnlab` that is not a package (the root
    of a clone), which the path finder would take for a namespace package ahead of an editable
    install (setuptools appends its finder after the path finder), put the editable finder first.
    Nothing changes otherwise; with a wheel install the regular package wins anyway."""
    try:
        shadow = os.path.join(os.getcwd(), "attnlab")
    except OSError:  # a working directory that no longer exists
        return
    if not os.path.isdir(shadow) or os.path.exists(os.path.join(shadow, "__init__.py")):
        return
    editable = [f for f in sys.meta_path if getattr(f, "__module__", "").startswith("__editable___attnlab")]
    for finder in editable:
        sys.meta_path.remove(finder)
        sys.meta_path.insert(0, finder)


def install() -> None:
    editable_first()
    if os.environ.get("ATTNLAB_LM_EVAL_PLUGIN", "1") == "0":
        return
    if WATCHED in sys.modules:  # lm-eval already loaded (e.g. install() called late)
        register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
