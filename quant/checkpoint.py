"""INT4 model folders: compressed-tensors' `pack-quantized` checkpoint, written and read by attnlab.

    <folder>/config.json         the model config + quantization_config (below) + attnlab_quant
    <folder>/model.safetensors   per quantized Linear: weight_packed int32 [N, K/8], weight_scale
                                 [N, K/g], weight_shape int64 [2] (int4_linear.py); the rest as usual
    <folder>/generation_config.json, tokenizer files   when the model / source have them

quantization_config is the compressed-tensors description vLLM and llm-compressor read:

    {"quant_method": "compressed-tensors", "format": "pack-quantized",
     "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int",
         "symmetric": true, "strategy": "group", "group_size": 32, "dynamic": false,
         "observer": "minmax"}, "input_activations": null, "output_activations": null}},
     "ignore": [every Linear left in full precision], "quantization_status": "compressed"}

`load_int4` is attnlab's reader (AttnLabForCausalLM.from_pretrained sends such folders here, so
transformers' own compressed-tensors quantizer, which would build its own layers, never runs):
it builds the model from its config, swaps every Linear not in `ignore` for an Int4Linear and
loads the safetensors strictly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

FORMAT = "pack-quantized"
QUANT_METHOD = "compressed-tensors"
WEIGHTS = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group"}


def compressed_tensors_config(group_size: int, ignore: list[str]) -> dict:
    """The quantization_config of a W4A16 model whose full-precision Linear modules are `ignore`."""
    weights = {**WEIGHTS, "group_size": group_size, "dynamic": False, "observer": "minmax"}
    group = {"targets": ["Linear"], "weights": weights, "input_activations": None, "output_activations": None}
    return {
        "quant_method": QUANT_METHOD,
        "format": FORMAT,
        "config_groups": {"group_0": group},
        "ignore": list(ignore),
        "quantization_status": "compressed",
    }


def quantization_config_of(config) -> dict | None:
    """config.quantization_config (a config object's or a config.json dict's), or None."""
    value = (
        config.get("quantization_config")
        if isinstance(config, dict)
        else getattr(config, "quantization_config", None)
    )
    return value if isinstance(value, dict) else None


def is_int4_config(config) -> bool:
    """Whether a config (object or config.json dict) describes a compressed-tensors pack-quantized model."""
    qc = quantization_config_of(config)
    return qc is not None and qc.get("quant_method") == QUANT_METHOD and qc.get("format") == FORMAT


def int4_layout(config) -> tuple[int, list[str]]:
    """-> (group_size, ignore) of a pack-quantized config; a scheme attnlab does not build (other bit
    widths, asymmetric, activation quantization, several groups) raises ValueError naming the field."""
    qc = quantization_config_of(config)
    where = "config.json quantization_config"
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or len(groups) != 1:
        raise ValueError(
            f"{where}.config_groups = {groups!r}: attnlab reads exactly one group (W4A16 Linear)"
        )
    ((name, group),) = groups.items()
    at = f"{where}.config_groups.{name}"
    if group.get("targets") != ["Linear"]:
        raise ValueError(f"{at}.targets = {group.get('targets')!r}; allowed: ['Linear']")
    for field in ("input_activations", "output_activations"):
        if group.get(field) is not None:
            raise ValueError(f"{at}.{field} is set; attnlab reads weight-only INT4 (W4A16), allowed: null")
    weights = group.get("weights") or {}
    for field, value in WEIGHTS.items():
        if weights.get(field) != value:
            raise ValueError(
                f"{at}.weights.{field} = {weights.get(field)!r}; attnlab reads 4-bit symmetric "
                f"group-quantized int weights, allowed: {value!r}"
            )
    group_size = weights.get("group_size")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 2:
        raise ValueError(f"{at}.weights.group_size = {group_size!r}: must be an integer >= 2")
    ignore = qc.get("ignore") or []
    return group_size, list(ignore)


def ignored(name: str, ignore: list[str]) -> bool:
    """compressed-tensors' ignore entries: exact module names, or `re:<regex>` over the name."""
    return any(name == p or (p.startswith("re:") and re.fullmatch(p[3:], name)) for p in ignore)


def save_int4(model: nn.Module, tokenizer, out: str | Path) -> Path:
    """Write an INT4 model (after quantize_model) as a model folder, whole or not at all: `out` must
    not exist or be an empty folder. Tied weights are written once (as save_pretrained does)."""
    from safetensors.torch import save_file

    from .pack import int4_modules

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new one")
    if not int4_modules(model) or not is_int4_config(model.config):
        raise ValueError(
            "the model holds no Int4Linear module; quantize it first (attnlab.quant.quantize_model)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the finished folder private
    try:
        model.config.dtype = float_dtype(model)
        model.config.save_pretrained(tmp)
        save_file(once_each(model.state_dict()), tmp / "model.safetensors", metadata={"format": "pt"})
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's float parameters (embeddings, norms, full-precision layers)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def once_each(state: dict) -> dict:
    """The state dict on CPU, contiguous, with a tensor tied to an earlier one left out."""
    kept, seen = {}, set()
    for key, tensor in state.items():
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and where in seen:
            continue
        seen.add(where)
        kept[key] = tensor.detach().contiguous().cpu()
    return kept


def load_int4(model_class, folder: str | Path, config, dtype: torch.dtype | str | None = None) -> nn.Module:
    """Model of `model_class` from an INT4 folder: built from `config` without random init, its
    quantized Linear modules Int4Linear, every tensor loaded from the safetensors (missing only
    tied weights, which are tied again). In eval mode, on CPU."""
    from transformers.initialization import no_init_weights

    from .int4_linear import Int4Linear
    from .selection import linear_modules

    folder = Path(folder)
    group_size, ignore = int4_layout(config)
    dtype = resolve_dtype(dtype if dtype not in (None, "auto") else getattr(config, "dtype", None))
    with no_init_weights():
        model = model_class(config)
    if getattr(config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()  # before loading: a tied weight then loads through its partner
    model.to(dtype)
    for name, linear in linear_modules(model).items():
        if ignored(name, ignore):
            continue
        int4 = Int4Linear(linear.in_features, linear.out_features, group_size, linear.bias is not None, dtype)
        model.set_submodule(name, int4)
    state = read_safetensors(folder)
    missing, unexpected = [], []
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # size mismatches (Int4Linear's own messages among them)
        raise ValueError(f"{folder}: the INT4 checkpoint does not match its config.json: {err}") from None
    missing = [key for key in missing if not tied_to_loaded(model, key, state)]
    if missing or unexpected:
        raise ValueError(
            f"{folder}: the INT4 checkpoint does not match its config.json (quantization_config.ignore "
            f"decides which Linear modules are INT4): missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    if (folder / "generation_config.json").is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    return model.eval()


def resolve_dtype(value) -> torch.dtype:
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype = {value!r} is not a torch dtype")
    return dtype


def tied_to_loaded(model: nn.Module, key: str, state: dict) -> bool:
    """A missing parameter that is the same tensor as one the checkpoint holds (tie_word_embeddings)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    return any(name in state for name, p in params.items() if p is params[key] and name != key)


def read_safetensors(folder: Path) -> dict:
    """Every tensor of the folder's model.safetensors, or of the shards its index names."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    state = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; an INT4 model folder holds its weights there")
        state.update(load_file(str(path)))
    return state
