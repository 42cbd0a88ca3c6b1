"""The three variants of each trained family (serve/quant_bench.py), as model folders:

    fp32      the trained model as it is (`<run>/hf`): training runs in float32 here, so this is the
              fp32 model — the unquantized baseline (Kimi K2's is bf16; the INT4 ratio against bf16
              is reported beside the fp32 bytes)
    int4-ptq  post-training quantization of that model with the default scheme (INT4, symmetric,
              groups of 32, every Linear in the decoder layers): OUT/int4/<family>-ptq
    int4-qat  the QAT twin (`<family>-qat`, fake quant from its start step) converted with the scheme
              it recorded (`attnlab quantize --method qat-convert`): OUT/int4/<family>-qat

The INT4 folders are compressed-tensors pack-quantized checkpoints (attnlab.quant.save_int4); they
load through AutoModelForCausalLM with Int4Linear modules, as any user of them would load them.
They are written anew on every run (quantizing takes milliseconds; an old folder could be stale).
"""

from __future__ import annotations

import shutil
from pathlib import Path

VARIANTS = ("fp32", "int4-ptq", "int4-qat")
METHODS = {"int4-ptq": "ptq", "int4-qat": "qat-convert"}


def variant_folders(out: Path, runs: dict[str, dict], family: str) -> dict[str, Path]:
    """variant -> model folder, for a family whose run and QAT twin are in `runs`."""
    return {
        "fp32": Path(runs[family]["path"]) / "hf",
        "int4-ptq": Path(out) / "int4" / f"{family}-ptq",
        "int4-qat": Path(out) / "int4" / f"{family}-qat",
    }


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
    """Both INT4 folders of a family -> {variant: {"folder", "scheme"}} for all three variants."""
    folders = variant_folders(out, runs, family)
    sources = {"int4-ptq": folders["fp32"], "int4-qat": Path(runs[f"{family}-qat"]["path"]) / "hf"}
    made = {"fp32": {"folder": str(folders["fp32"]), "scheme": None}}
    for variant, method in METHODS.items():
        scheme = write_int4(sources[variant], folders[variant], method)
        made[variant] = {"folder": str(folders[variant]), "scheme": scheme}
    return made
