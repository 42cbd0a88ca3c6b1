"""The folders depend on each other one way (docs/architecture.md "Layers"): every import between
two folders — at module level or inside a function — points down the order below, names only the
lower folder's package (`attnlab.archs`, `..archs`), never one of its modules, and takes only names
that package lists in `__all__`. A new upward, circular or private import fails here."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Top to bottom. A folder may import any folder below it; folders on one row never import each other.
LAYERS = [
    ("attnlab",),
    ("study",),
    ("serve",),
    ("train",),
    ("evals", "probes"),
    ("archs",),
    ("quant",),  # INT4 weights: archs loads INT4 folders through it
    ("kernels",),
    ("common", "configs"),
]
RANK = {folder: depth for depth, row in enumerate(LAYERS) for folder in row}


def imports_between_folders() -> list[tuple[str, str, str, list[str], int]]:
    """(importing file, its folder, imported module, names taken, line) for every attnlab import
    that crosses folders. Relative imports are resolved against the file's package."""
    found = []
    for folder in RANK:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "lm_eval_plugin" in path.parts:
                continue  # a top-level hook module outside the package (imports attnlab lazily)
            parts = path.relative_to(ROOT).with_suffix("").parts
            package = ["attnlab"] + ([] if folder == "attnlab" else [folder]) + list(parts[1:-1])
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package[: len(package) - node.level + 1]
                        module = ".".join(base + ([node.module] if node.module else []))
                    else:
                        module = node.module or ""
                    names = [a.name for a in node.names]
                    if node.module is None and node.level:  # `from .. import archs`
                        for name in names:
                            found.append(
                                (str(path.relative_to(ROOT)), folder, f"{module}.{name}", [], node.lineno)
                            )
                        continue
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        found.append((str(path.relative_to(ROOT)), folder, alias.name, [], node.lineno))
                    continue
                else:
                    continue
                found.append((str(path.relative_to(ROOT)), folder, module, names, node.lineno))
    crossing = []
    for file, folder, module, names, line in found:
        bits = module.split(".")
        if bits[0] != "attnlab":
            continue
        target = bits[1] if len(bits) > 1 and bits[1] in RANK else "attnlab"
        if target != folder:
            crossing.append((file, folder, module, names, line))
    return crossing


def test_imports_between_folders_point_down():
    upward = [
        f"{file}:{line} imports {module} ({folder} may not import {module.split('.')[1] if '.' in module else 'attnlab'})"
        for file, folder, module, _, line in imports_between_folders()
        if RANK[
            module.split(".")[1] if len(module.split(".")) > 1 and module.split(".")[1] in RANK else "attnlab"
        ]
        <= RANK[folder]
    ]
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_other_folders_use_only_a_folders_public_names():
    wrong = []
    for file, _, module, names, line in imports_between_folders():
        bits = module.split(".")
        if len(bits) == 1:
            continue  # `import attnlab` / `from attnlab import X`: the root's public API
        if bits[1] not in RANK or len(bits) > 2:
            wrong.append(f"{file}:{line} imports the module {module} (use attnlab.{bits[1]}'s names)")
            continue
        public = set(getattr(importlib.import_module(module), "__all__", ()))
        private = [n for n in names if n not in public]
        if private:
            wrong.append(f"{file}:{line} takes {private} from {module}, which does not list them in __all__")
    assert not wrong, "imports past a folder's public face:\n" + "\n".join(wrong)


@pytest.mark.parametrize("folder", sorted(RANK))
def test_every_public_name_resolves_and_none_is_shadowed_by_a_module(folder):
    module = importlib.import_module("attnlab" if folder == "attnlab" else f"attnlab.{folder}")
    modules = {p.stem for p in (ROOT / folder).glob("*.py")} | {
        p.parent.name for p in (ROOT / folder).glob("*/__init__.py")
    }
    for name in getattr(module, "__all__", ()):
        # Once `attnlab.<folder>.<name>` is imported as a module, the package attribute is that
        # module, not the function of the same name: a public name must not be a module's name.
        assert name not in modules, f"attnlab.{folder}.{name} is also a module of the folder"
        assert getattr(module, name) is not None, f"attnlab.{folder}.{name}"
