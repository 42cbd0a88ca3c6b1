"""`attnlab demo`: build one small model of every mixer family and hybrid layout, generate from
each with its cache, check the cached tokens against a no-cache greedy loop, and report
parameters and cache bytes per sequence at a few context lengths.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..common import human_bytes
from .presets import preset

DEMO_VARIANTS: dict[str, dict] = {
    "full": {"layers": "F"},
    # DeepSeek-style ratios at this width: latent 32 + rope key 8 per token per layer.
    "mla": {
        "layers": "M",
        "mixers": {
            "M": {
                "type": "mla",
                "q_lora_rank": 32,
                "kv_lora_rank": 32,
                "qk_nope_head_dim": 16,
                "qk_rope_head_dim": 8,
                "v_head_dim": 16,
            }
        },
    },
    "lightning": {"layers": "L"},
    "swa": {"layers": "S", "mixers": {"S": {"type": "swa", "window": 64, "sinks": True}}},
    "intra (swa+full heads)": {"layers": "I"},
    "minimax01 7:1": preset("minimax01"),
    "gpt-oss 1:1": preset("gpt-oss"),
    "gemma3 5:1": preset("gemma3"),
    "qwen3-next 3:1": preset("qwen3-next"),
}
CONTEXTS = (1024, 8192, 65536)


def demo_config(spec: dict):
    from .config import AttnLabConfig

    n = len(spec["layers"])
    return AttnLabConfig(
        vocab_size=256,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=n if n > 1 else 2,
        **spec,
    )


def greedy_without_cache(model, ids, steps: int):
    import torch

    for _ in range(steps):
        nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def run_demo(out_dir: Path, new_tokens: int = 24) -> list[dict]:
    import torch

    from .model import AttnLabForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    prompt = torch.tensor([list(b"attnlab: one model, many mixers. ")])
    rows = []
    for name, spec in DEMO_VARIANTS.items():
        torch.manual_seed(0)
        model = AttnLabForCausalLM(demo_config(spec)).eval()
        with torch.no_grad():
            start = time.perf_counter()
            out = model.generate(
                prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
            )
            seconds = time.perf_counter() - start
            reference = greedy_without_cache(model, prompt, new_tokens)
        rows.append(
            {
                "variant": name,
                "layers": "".join(m.mixer_type[0].upper() for m in model.mixers()),
                "params": sum(p.numel() for p in model.parameters()),
                "cache_matches_no_cache": bool(torch.equal(out, reference)),
                "generate_tokens_per_s": round(new_tokens / seconds, 1),
                **{f"cache_bytes@{t}": model.state_bytes(t, torch.bfloat16) for t in CONTEXTS},
            }
        )
        print(f"  {name:24s} cache==no-cache: {rows[-1]['cache_matches_no_cache']}", flush=True)
    (out_dir / "demo.json").write_text(json.dumps(rows, indent=2))
    (out_dir / "demo.md").write_text(markdown_table(rows))
    return rows


def register(sub) -> None:
    from attnlab.common import positive_int

    demo = sub.add_parser("demo", help="build one model of each mixer family, generate with its cache")
    demo.add_argument("--out", default="runs/demo", help="run directory for demo.json / demo.md")
    demo.add_argument("--new-tokens", type=positive_int, default=24, help="tokens to generate per model")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    out = Path(args.out)
    print(f"attnlab demo: one small model per mixer family and hybrid layout -> {out}")
    rows = run_demo(out, new_tokens=args.new_tokens)
    print((out / "demo.md").read_text())
    return 0 if all(r["cache_matches_no_cache"] for r in rows) else 1


def markdown_table(rows: list[dict]) -> str:
    head = ["variant", "layers", "params", "cache==no-cache"] + [f"cache/seq @{t} (bf16)" for t in CONTEXTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["variant"],
            r["layers"],
            f"{r['params']:,}",
            "yes" if r["cache_matches_no_cache"] else "NO",
        ]
        cells += [human_bytes(r[f"cache_bytes@{t}"]) for t in CONTEXTS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
