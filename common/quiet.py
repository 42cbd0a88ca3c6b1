"""Start-up noise from other libraries that attnlab's commands and processes do not show.

transformers imports torchao wherever it is installed, and that import logged four warnings on
every `attnlab` command and in every engine process, none about the run:
- torchao tries to load each of its compiled extensions and warns for each that does not load. Its
  CUDA-only ones (`_C_cutlass_*`, `_C_mxfp8*`) never load on a CPU build of torch.
- torch warns that torchao registers its Enum classes (KernelPreference, ScaleCalculationMode) as
  pytree constants, which torch now deprecates: a notice for torchao's developers.
The filters drop exactly those records (the first kind only while torch has no CUDA); every other
message of either logger passes.
"""

from __future__ import annotations

import logging
import sys

CUDA_ONLY_EXTENSIONS = ("_C_cutlass", "_C_mxfp8")


class CudaOnlyExtensionsFilter(logging.Filter):
    """torchao's "Failed to load <CUDA-only extension>" on a torch without CUDA."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Failed to load ") or not any(n in message for n in CUDA_ONLY_EXTENSIONS):
            return True
        torch = sys.modules.get("torch")  # torchao imports it first; no import here
        return torch is None or getattr(torch.version, "cuda", None) is not None


class TorchaoEnumConstantsFilter(logging.Filter):
    """torch's deprecation notice for register_constant() on an Enum class that torchao defines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("%s is an Enum subclass") or not record.args:
            return True
        cls = record.args[0] if isinstance(record.args, tuple) else None
        return not str(getattr(cls, "__module__", "")).startswith("torchao")


FILTERS = {"torchao": CudaOnlyExtensionsFilter, "torch.utils._pytree": TorchaoEnumConstantsFilter}


def quiet_torchao_import() -> None:
    """Install the filters on their loggers (once each; nothing need be imported yet)."""
    for name, kind in FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
