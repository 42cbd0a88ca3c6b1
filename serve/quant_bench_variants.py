"""The four variants of each trained family (serve/quant_bench.py), as model folders:

    fp32      the trained model as it is (`<run>/hf`): training runs in float32 here, so this is the
              reference every other variant is compared with
    bf16      that model's weights rounded to bfloat16 and run in bfloat16 (OUT/bf16/<family>): the
              baseline INT4 serving replaces (Kimi K2's comparison is bf16 against INT4)
    int4-ptq  post-training quantization of that model with the default scheme (INT4, symmetric,
              groups of 32, every Linear in the decoder layers): OUT/int4/<family>-ptq
    int4-qat  the QAT twin (`<family>-qat`, fake quant from its start step) converted with the scheme
              it recorded (`attnlab quantize --method qat-convert`): OUT/int4/<family>-qat

The INT4 folders are compressed-tensors pack-quantized checkpoints (attnlab.quant.save_int4); they
load through AutoModelForCausalLM with Int4Linear modules, as any user of them would load them.
The bf16 and INT4 folders are written anew on every run (milliseconds; an old folder could be stale).
"""

from __future__ import annotations

import shutil
from pathlib import Path

VARIANTS = ("fp32", "bf16", "int4-ptq", "int4-qat")
METHODS = {"int4-ptq": "ptq", "int4-qat": "qat-convert"}


def variant_folders(out: Path, runs: dict[str, dict], family: str) -> dict[str, Path]:
    """variant -> model folder, for a family whose run and QAT twin are in `runs`."""
    return {
        "fp32": Path(runs[family]["path"]) / "hf",
        "bf16": Path(out) / "bf16" / family,
        "int4-ptq": Path(out) / "int4" / f"{family}-ptq",
        "int4-qat": Path(out) / "int4" / f"{family}-qat",
    }


def write_bf16(source: Path, dest: Path) -> None:
    """The model in `source` with its weights in bfloat16, saved to `dest` (replaced); its config
    records the dtype, so loading it gives a bfloat16 model."""
    import torch

    from ..evals import load_model

    model, tokenizer, _ = load_model(source, "cpu")
    shutil.rmtree(dest, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(dest)
    if tokenizer is not None:
        tokenizer.save_pretrained(dest)


def write_int4(source: Path, dest: Path, method: str) -> dict:
    """Quantize the model in `source` ('ptq': the default scheme; 'qat-convert': the scheme its
    config records) into the folder `dest` (replaced) -> the scheme used."""
    from ..evals import load_model
    from ..quant import QuantScheme, quantize_model, save_int4

    model, tokenizer, _ = load_model(source, "cpu")
    if method == "ptq":
        scheme = QuantScheme()
    else:
        recorded = getattr(model.config, "attnlab_quant", None)
        if not isinstance(recorded, dict) or recorded.get("qat") is not True:
            raise ValueError(f"{source}: no QAT scheme recorded (config.attnlab_quant with qat: true)")
        scheme = QuantScheme.from_dict(recorded, f"{source}/config.json attnlab_quant")
    quantize_model(model, scheme)
    shutil.rmtree(dest, ignore_errors=True)
    save_int4(model, tokenizer, dest)
    return scheme.to_dict()


def write_variants(out: Path, runs: dict[str, dict], family: str) -> dict[str, dict]:
    """The bf16 and both INT4 folders of a family -> {variant: {"folder", "scheme"}} for every variant
    (scheme: the INT4 scheme, None for the float variants)."""
    folders = variant_folders(out, runs, family)
    sources = {"int4-ptq": folders["fp32"], "int4-qat": Path(runs[f"{family}-qat"]["path"]) / "hf"}
    made = {v: {"folder": str(folders[v]), "scheme": None} for v in ("fp32", "bf16")}
    write_bf16(folders["fp32"], folders["bf16"])
    for variant, method in METHODS.items():
        scheme = write_int4(sources[variant], folders[variant], method)
        made[variant] = {"folder": str(folders[variant]), "scheme": scheme}
    return made
