"""`attnlab quantize PATH --method {ptq,qat-convert} --out DIR`: an INT4 weight-only (W4A16) model
folder in compressed-tensors' pack-quantized format (docs/quantization.md), loadable with
`AutoModelForCausalLM.from_pretrained`, `attnlab eval`, `attnlab serve`.

- ptq: post-training quantization of PATH's weights, modules and group size from the flags
  (defaults: the train config's `quant:` defaults).
- qat-convert: the model a QAT run exported (config.attnlab_quant with qat: true), quantized with
  exactly the scheme it was trained with, so the INT4 model computes its fake-quantized forward.

Prints the weight bytes before and after, of the quantized modules and of the whole model. A bad
flag or input exits 2 with one line naming it; the output folder is written whole or not at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import human_bytes, positive_int

METHODS = ("ptq", "qat-convert")


def register(sub) -> None:
    p = sub.add_parser("quantize", help="INT4 weight-only model folder (PTQ, or the conversion of a QAT run)")
    p.add_argument("path", type=Path, metavar="PATH", help="attnlab run dir or model folder")
    p.add_argument(
        "--method",
        choices=METHODS,
        required=True,
        help="ptq: from the flags; qat-convert: the trained scheme",
    )
    p.add_argument("--out", type=Path, required=True, help="new folder to write (must not exist or be empty)")
    p.add_argument("--group-size", type=positive_int, default=None, help="inputs per scale (ptq; default 32)")
    p.add_argument(
        "--modules", nargs="+", default=None, metavar="PATTERN",
        help="nn.Linear modules to quantize, as name patterns (ptq; default model.layers.*)",
    )  # fmt: skip
    p.add_argument(
        "--skip", nargs="*", default=None, metavar="PATTERN",
        help="patterns kept in full precision (ptq; default lm_head embed_tokens norms router)",
    )  # fmt: skip
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args) -> int:
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return fail(f"--out {out} exists and is not an empty folder; choose a new one")
    try:
        from attnlab.evals import load_model
        from attnlab.quant import (
            flag_label,
            is_int4_config,
            quantize_model,
            save_int4,
            select_linears,
            weight_bytes,
        )

        model, tokenizer, model_dir = load_model(args.path, "cpu")
        if is_int4_config(model.config):
            return fail(f"PATH {args.path} is already an INT4 (pack-quantized) model; nothing to quantize")
        scheme = choose_scheme(args, model)
        label = (
            flag_label
            if args.method == "ptq"
            else (lambda name: f"{model_dir}/config.json attnlab_quant.{name}")
        )
        names = select_linears(model, scheme.check(label), label)
        before = weight_bytes(model, names), weight_bytes(model)
        quantize_model(model, scheme, label)
        after = weight_bytes(model, names), weight_bytes(model)
        save_int4(model, tokenizer, out)
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e))
    print(
        f"attnlab quantize: {len(names)} Linear modules to INT4, group size {scheme.group_size} ({args.method})"
    )
    for what, b, a in (("quantized modules", before[0], after[0]), ("whole model", before[1], after[1])):
        print(
            f"  {what:18} {human_bytes(b):>10} -> {human_bytes(a):>10}  ({b / a:.2f}x smaller; {b} -> {a} bytes)"
        )
    print(f"attnlab quantize: wrote {out}" + ("" if tokenizer else " (no tokenizer found)"))
    return 0


def choose_scheme(args, model):
    """ptq: the flags over the defaults; qat-convert: the scheme the model was trained with (and no
    flags, which would change it)."""
    from attnlab.quant import QuantScheme

    if args.method == "ptq":
        scheme = QuantScheme()
        for name in ("group_size", "modules", "skip"):
            if getattr(args, name) is not None:
                setattr(scheme, name, getattr(args, name))
        return scheme
    given = [
        f"--{n.replace('_', '-')}" for n in ("group_size", "modules", "skip") if getattr(args, n) is not None
    ]
    if given:
        raise ValueError(
            f"{', '.join(given)} cannot be combined with --method qat-convert, which quantizes with the "
            f"scheme the model was trained with; use --method ptq to choose"
        )
    recorded = getattr(model.config, "attnlab_quant", None)
    if not isinstance(recorded, dict) or recorded.get("qat") is not True:
        raise ValueError(
            f"--method qat-convert needs a model trained with QAT (a train config with "
            f"`quant: {{qat: true}}` records config.attnlab_quant with qat: true); PATH {args.path} has "
            f"{'no attnlab_quant' if recorded is None else 'attnlab_quant without qat: true'}; "
            f"use --method ptq to quantize it after training"
        )
    return QuantScheme.from_dict(recorded, "config.json attnlab_quant")


def fail(message: str) -> int:
    print(f"attnlab quantize: error: {message}", file=sys.stderr)
    return 2
