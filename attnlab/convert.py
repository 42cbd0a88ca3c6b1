"""`attnlab convert PATH --to llama | --from llama --out DIR`: a model folder in the other format,
same weights, tokenizer copied (archs/llama.py). The output folder is written whole or not at all."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("convert", help="attnlab full-attention model <-> Hugging Face Llama folder")
    p.add_argument(
        "path", type=Path, metavar="PATH", help="attnlab run dir / model folder, or a Llama folder"
    )
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=["llama"], help="write PATH (attnlab) as a Llama checkpoint")
    direction.add_argument("--from", dest="source", choices=["llama"], help="read PATH as a Llama checkpoint")
    p.add_argument("--out", type=Path, required=True, help="new folder to write (must not exist or be empty)")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return _fail(f"--out {out} exists and is not an empty folder; choose a new one")
    try:
        model, tokenizer = _load(args.path, llama=args.source == "llama")
        from attnlab.archs import from_llama, to_llama

        converted = from_llama(model) if args.source == "llama" else to_llama(model)
    except (ValueError, FileNotFoundError, OSError) as e:
        return _fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        converted.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        return _fail(f"cannot write {out}: {e}")
    kind = "attnlab" if args.source == "llama" else "Llama"
    print(f"attnlab convert: wrote {kind} model to {out}" + ("" if tokenizer else " (no tokenizer found)"))
    return 0


def _load(path: Path, llama: bool):
    if not llama:
        from attnlab.evals import load_model

        model, tokenizer, _ = load_model(path, "cpu")
        return model, tokenizer
    from transformers import AutoTokenizer, LlamaForCausalLM

    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"PATH {path} has no config.json; expected a Hugging Face Llama folder")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "llama":
        raise ValueError(f"PATH {path} holds model_type {model_type!r}; --from llama reads 'llama' only")
    model = LlamaForCausalLM.from_pretrained(str(path)).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError):
        tokenizer = None
    return model, tokenizer


def _fail(message: str) -> int:
    print(f"attnlab convert: error: {message}", file=sys.stderr)
    return 2
