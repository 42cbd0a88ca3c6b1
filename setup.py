"""Build hooks only; the metadata lives in pyproject.toml.

Both the wheel and the editable install (`pip install -e .`) carry
evals/lm_eval_plugin/attnlab-lm-eval.pth to the root of site-packages, which makes
`lm_eval --model attnlab` work with lm-eval's own CLI (see evals/lm_eval_plugin/_attnlab_lm_eval.py).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = Path(__file__).resolve().parent / "evals" / "lm_eval_plugin" / "attnlab-lm-eval.pth"


class build_py_with_pth(build_py):
    """Wheel: the .pth goes next to the packages, i.e. to the root of site-packages."""

    def run(self):
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib) / PTH.name))

    def get_outputs(self, *args, **kwargs):
        return [*super().get_outputs(*args, **kwargs), str(Path(self.build_lib) / PTH.name)]


class _StrategyWithPth:
    """Wraps setuptools' editable strategy (a context manager called with the wheel) to add the .pth."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        wheel.writestr(PTH.name, PTH.read_bytes())

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self.strategy.__exit__(*exc)


class editable_wheel_with_pth(editable_wheel):
    """Editable install: the same .pth, written into the editable wheel."""

    def _select_strategy(self, *args, **kwargs):
        return _StrategyWithPth(super()._select_strategy(*args, **kwargs))


setup(cmdclass={"build_py": build_py_with_pth, "editable_wheel": editable_wheel_with_pth})
