"""`attnlab probe PATH`: head scores, heatmaps, ablation and a summary for one model.

attnlab probe runs/my_run --probes retrieval,induction --ablate top:8 --out runs/my_run/probe
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .modes import MODES

DEFAULT_PROBES = "retrieval,induction,previous_token,duplicate,prefix_matching"


def probe_list(text: str) -> list[str]:
    from .probe_registry import probe_names

    allowed = probe_names()
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown probe(s) {', '.join(unknown) or '(none given)'}; allowed: {', '.join(allowed)}"
        )
    return list(dict.fromkeys(names))


def probe_name(text: str) -> str:
    names = probe_list(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one probe name")
    return names[0]


def ablate_spec(text: str) -> int:
    from .ablation import parse_ablate

    try:
        return parse_ablate(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def existing_model(text: str) -> str:
    from .load import model_folder

    try:
        model_folder(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def register(sub) -> None:
    from attnlab.common import positive_int
    from attnlab.kernels import add_kernels_option

    p = sub.add_parser("probe", help="score attention heads (retrieval, induction, ...) and ablate them")
    p.add_argument(
        "path", metavar="PATH", type=existing_model, help="attnlab run dir (with hf/) or HF model folder"
    )
    p.add_argument(
        "--probes",
        type=probe_list,
        default=DEFAULT_PROBES,  # a string default goes through `type` at parse time (no import here)
        help=f"comma list (default: {DEFAULT_PROBES})",
    )
    p.add_argument(
        "--ablate", type=ablate_spec, default=None, metavar="top:K", help="mask the top K heads vs K random"
    )
    p.add_argument("--ablate-by", type=probe_name, default="retrieval", help="probe whose scores rank heads")
    p.add_argument(
        "--mask", choices=MODES, default="uniform", help="uniform attention (Wu et al.) or zero output"
    )
    p.add_argument("--draws", type=positive_int, default=5, help="random head sets to compare against")
    p.add_argument(
        "--out", default=None, help="output directory (default: PATH/probe, next to the model, as eval)"
    )
    p.add_argument("--max-context", type=positive_int, default=None, help="cap on NIAH prompt+answer tokens")
    p.add_argument(
        "--seq-len", type=positive_int, default=50, help="random tokens per repeat (induction etc.)"
    )
    p.add_argument("--batch", type=positive_int, default=10, help="repeated sequences per pattern probe")
    p.add_argument(
        "--prefix-len", type=positive_int, default=25, help="random tokens per repeat (prefix matching)"
    )
    p.add_argument("--niah-lengths", type=positive_int, default=4, help="NIAH context lengths in the grid")
    p.add_argument("--niah-depths", type=positive_int, default=5, help="NIAH needle depths in the grid")
    p.add_argument(
        "--niah-needles", type=positive_int, default=2, help="NIAH needles per (length, depth) cell"
    )
    p.add_argument("--kv-pairs", type=positive_int, default=8, help="key-value pairs per kv_retrieval prompt")
    p.add_argument(
        "--kv-separator",
        choices=["auto", "on", "off"],
        default="auto",
        help="kv_retrieval pairs written `0 k v`; auto: as the run's MQAR training data",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_kernels_option(p)
    p.set_defaults(func=cmd_probe)


def trained_separator(path: str) -> bool:
    """Whether the attnlab run at `path` trained on MQAR with `separator: true` (its config.yaml)."""
    import yaml

    for config in (Path(path) / "config.yaml", Path(path).parent / "config.yaml"):
        if config.is_file():
            data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
            return bool((data.get("task") or {}).get("separator", False))
    return False


def cmd_probe(args) -> int:
    from .load import load_model
    from .probe import ProbeSettings
    from .runner import run_probes
    from .target import ProbeTarget

    settings = ProbeSettings(
        seed=args.seed,
        batch=args.batch,
        seq_len=args.seq_len,
        prefix_len=args.prefix_len,
        niah_lengths=args.niah_lengths,
        niah_depths=args.niah_depths,
        niah_needles=args.niah_needles,
        max_context=args.max_context,
        kv_pairs=args.kv_pairs,
        kv_separator=trained_separator(args.path)
        if args.kv_separator == "auto"
        else args.kv_separator == "on",
        progress=not args.no_progress,
    )
    args.out = args.out or str(Path(args.path) / "probe")
    print(f"attnlab probe: {args.path} -> {args.out} ({', '.join(args.probes)})", flush=True)
    try:
        target = ProbeTarget.wrap(load_model(args.path, device=args.device))
        run_probes(
            target,
            args.probes,
            settings,
            Path(args.out),
            source=str(args.path),
            ablate_k=args.ablate,
            ablate_by=args.ablate_by,
            mode=args.mask,
            draws=args.draws,
        )
    except ValueError as err:  # settings that do not fit this model (k, context, vocabulary)
        print(f"attnlab probe: error: {err}", file=sys.stderr)
        return 2
    print((Path(args.out) / "probe.md").read_text())
    return 0
