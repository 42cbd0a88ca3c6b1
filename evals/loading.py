"""Models on disk: resolve an attnlab run dir or HF causal-LM folder to its model folder, and load
the model with its tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM

from ..archs import check_model_files
from .mqar import training_options
from .tokenizer import load_tokenizer


def resolve_model_dir(path: str | Path) -> Path:
    """An HF model folder (has config.json), or an attnlab run dir holding one: the newest
    config.json up to two levels down (e.g. run/model, run/checkpoints/last)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"PATH {path} does not exist; expected an attnlab run dir or a HF causal-LM folder"
        )
    if (path / "config.json").exists():
        return path
    found = sorted(
        (p.parent for p in [*path.glob("*/config.json"), *path.glob("*/*/config.json")]),
        key=lambda p: (p / "config.json").stat().st_mtime,
    )
    if not found:
        raise FileNotFoundError(
            f"PATH {path} has no config.json in it or two levels below; expected an attnlab run dir or a HF causal-LM folder"
        )
    return found[-1]


def load_model(path: str | Path, device: str | None = None):
    """-> (model in eval mode on `device`, tokenizer or None, model dir). A model trained only on
    token tasks (e.g. MQAR with its own vocabulary) may have no tokenizer: text tasks are then
    skipped, token tasks still run."""
    from ..archs import AttnLabForCausalLM  # noqa: F401  (importing it registers the attnlab Auto classes)

    model_dir = resolve_model_dir(path)
    check_model_files(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).to(device).eval()
    try:
        tokenizer = load_tokenizer(model_dir, path)
    except FileNotFoundError:
        tokenizer = None
    return model, tokenizer, model_dir


def training_mqar_options(path: str | Path, model_dir: Path) -> dict:
    """The MQAR generator options of the attnlab run that trained this model (its resolved
    config.yaml: in PATH itself or next to the exported model folder), or {} when PATH is not a run
    trained on MQAR, e.g. a plain HF folder."""
    for config in (Path(path) / "config.yaml", model_dir.parent / "config.yaml"):
        if config.is_file():
            return training_options((yaml.safe_load(config.read_text()) or {}).get("data") or {})
    return {}


def model_names(paths: list[Path]) -> list[str]:
    """Short unique names for a comparison: the run dir's name."""
    names = []
    for p in paths:
        name = p.resolve().name
        while name in names:
            name += "'"
        names.append(name)
    return names
