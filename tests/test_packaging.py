"""The distribution builds as a wheel whose only top-level package is `attnlab` (beside the lm-eval
hook module and its .pth), and every module imports from the installed wheel (not from the source
tree)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# evals/lm_eval_plugin: `lm_eval --model attnlab`, installed at the root of site-packages
LM_EVAL_HOOK = ("_attnlab_lm_eval.py", "attnlab-lm-eval.pth")
FOLDERS = [
    "attnlab",
    "common",
    "archs",
    "quant",
    "kernels",
    "train",
    "probes",
    "evals",
    "serve",
    "study",
    "configs",
]


def source_modules() -> list[str]:
    """Every module of every folder and of its sub-packages (e.g. attnlab.kernels.paged.c)."""
    names = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if not (path.parent / "__init__.py").exists():
                continue  # a plain folder (data, fixtures), not a sub-package
            pkg = ".".join(["attnlab"] + ([] if folder == "attnlab" else [folder]) + list(parts[:-1]))
            names.append(pkg if parts[-1] == "__init__" else f"{pkg}.{parts[-1]}")
    return names


def test_every_sub_package_is_listed_in_pyproject():
    """setuptools ships only the packages pyproject names: a sub-package missing there installs
    without its files (and the editable install hides that)."""
    text = (ROOT / "pyproject.toml").read_text()
    for folder in FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            if parts:
                pkg, where = ".".join(["attnlab", folder, *parts]), "/".join([folder, *parts])
                assert f'"{pkg}",' in text and f'"{pkg}" = "{where}"' in text, (
                    f"{pkg} is not in pyproject.toml"
                )


def build_wheel(source: Path, out_dir: Path) -> Path:
    """pip wheel of the project at `source` (no deps, this environment's setuptools) -> the .whl."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out_dir),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out_dir.glob("attnlab-*.whl")
    return wheel


def test_wheel_has_only_attnlab_and_the_lm_eval_hook_and_every_module_imports_from_it(tmp_path):
    wheel = build_wheel(ROOT, tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    # the C sources of the `c` backends are package data, compiled at first use
    assert {"attnlab/kernels/paged/paged_attention.c", "attnlab/kernels/state/state_codec.c"} <= set(names)
    assert {t for t in tops if not t.endswith(".dist-info")} == {"attnlab", *LM_EVAL_HOOK}

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    # The hook module is imported at interpreter start by the installed .pth (here: the editable
    # one), so it is compared by content instead of imported.
    hook = ROOT / "evals" / "lm_eval_plugin"
    for name in LM_EVAL_HOOK:
        assert (site / name).read_text() == (hook / name).read_text()
    modules = source_modules()
    script = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        f"for name in {modules!r}:\n"
        "    mod = importlib.import_module(name)\n"
        f"    assert mod.__file__.startswith({str(site)!r}), (name, mod.__file__)\n"
        "print(len(sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_wheel_built_from_the_sdist_still_ships_the_lm_eval_hook(tmp_path):
    """pip installing from an sdist (PyPI's fallback) must keep `lm_eval --model attnlab` working."""
    import tarfile

    build = "from setuptools import build_meta; import sys; build_meta.build_sdist(sys.argv[1])"
    subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=ROOT, check=True, capture_output=True)
    (sdist,) = tmp_path.glob("attnlab-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (source,) = (tmp_path / "src").iterdir()
    wheel = build_wheel(source, tmp_path)
    assert set(LM_EVAL_HOOK) <= set(zipfile.ZipFile(wheel).namelist())


def test_console_script_runs():
    result = subprocess.run(["attnlab", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


def test_demo_writes_its_results(tmp_path):
    from attnlab.cli import main

    assert main(["demo", "--out", str(tmp_path), "--new-tokens", "3"]) == 0
    rows = __import__("json").loads((tmp_path / "demo.json").read_text())
    assert {r["variant"] for r in rows} >= {"full", "mla", "lightning", "swa", "minimax01 7:1"}
    assert all(r["cache_matches_no_cache"] for r in rows)
    assert "| variant |" in (tmp_path / "demo.md").read_text()


def test_bad_cli_argument_names_the_flag():
    result = subprocess.run(["attnlab", "demo", "--new-tokens", "0"], capture_output=True, text=True)
    assert result.returncode == 2 and "--new-tokens" in result.stderr and "positive" in result.stderr


def test_a_folder_named_attnlab_in_the_working_directory_does_not_shadow_the_package(tmp_path):
    # A clone's root is a folder named attnlab without __init__.py: the path finder would take it for
    # a namespace package ahead of an editable install (whose finder setuptools appends behind it).
    (tmp_path / "attnlab" / "archs").mkdir(parents=True)
    code = "import attnlab; from attnlab import AttnLabConfig; print(attnlab.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    path = Path(out.stdout.strip())
    assert path.name == "__init__.py" and path.parent.name == "attnlab" and tmp_path not in path.parents
