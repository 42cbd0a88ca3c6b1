"""Find and load the model behind `attnlab probe PATH`.

PATH is an attnlab run dir (its `hf/` subfolder holds the trainer's save_pretrained export) or any
local Hugging Face causal-LM folder (config.json + weights). Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from ..archs import check_model_files  # importing the model registers the Auto classes
from .hf_attention import IMPLEMENTATION


def model_folder(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ValueError(
            f"PATH {str(path)!r} does not exist; give an attnlab run dir or a local HF model folder"
        )
    for folder in (path / "hf", path):
        if (folder / "config.json").is_file():
            return folder
    raise ValueError(
        f"PATH {str(path)!r} holds no model: expected an attnlab run dir with hf/config.json "
        "or a Hugging Face model folder with config.json"
    )


def load_model(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
    folder = model_folder(path)
    check_model_files(folder)
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    kwargs = {"dtype": dtype}
    if model_type != "attnlab":
        # Eager maps through attnlab's AttentionInterface function (probes/hf_attention.py).
        kwargs["attn_implementation"] = IMPLEMENTATION
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **kwargs)
    return model.to(device).eval()
