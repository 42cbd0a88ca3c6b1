"""Check a saved model folder before loading it: a damaged or cut-short file gets one line naming
the file and what is wrong (instead of a deep safetensors or JSON traceback), before any output
folder is created."""

from __future__ import annotations

import json
from pathlib import Path


def check_model_files(folder: str | Path) -> None:
    """Raises ValueError when config.json does not parse or a *.safetensors file's header or size
    does not match what it declares."""
    folder = Path(folder)
    config = folder / "config.json"
    try:
        json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{config} is not valid JSON ({err.msg} at line {err.lineno}); the model folder is damaged"
        ) from None
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)


def check_safetensors(path: Path) -> None:
    """The header parses and the file holds every byte the header's tensors need."""
    size = path.stat().st_size
    problem = None
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            problem = f"{size} bytes, shorter than a header"
        else:
            length = int.from_bytes(head, "little")
            if 8 + length > size:
                problem = f"its header claims {length} bytes but the file has {size}"
            else:
                try:
                    header = json.loads(f.read(length))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    problem = "its header is not valid JSON"
                else:
                    end = max(
                        (t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0
                    )
                    if 8 + length + end > size:
                        problem = f"{size} bytes where its tensors need {8 + length + end} (cut short?)"
    if problem:
        raise ValueError(f"{path} is damaged or incomplete: {problem}; re-export or restore the model")
