"""The `attnlab` command: one subcommand per job (DESIGN.md "CLI")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> int:
    from attnlab.archs.demo import run_demo

    out = Path(args.out)
    print(f"attnlab demo: one small model per mixer family and hybrid layout -> {out}")
    rows = run_demo(out, new_tokens=args.new_tokens)
    print((out / "demo.md").read_text())
    return 0 if all(r["cache_matches_no_cache"] for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build one model of each mixer family, generate with its cache")
    demo.add_argument("--out", default="runs/demo", help="run directory for demo.json / demo.md")
    demo.add_argument("--new-tokens", type=int, default=24, help="tokens to generate per model")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
