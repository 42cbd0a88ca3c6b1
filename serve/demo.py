"""`attnlab demo`: build one small model of every mixer family and hybrid layout, generate from
each with its cache, check the cached tokens and logits against a no-cache greedy loop, and report
parameters and cache bytes per sequence at a few context lengths (a serving question: what one
sequence costs to keep).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..archs import preset
from ..common import human_bytes

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

# Weights drawn with std 0.2 instead of HF's 0.02. At 0.02 a query-key score is ~N(0, 0.03^2), so
# attention is almost uniform (the full model's last row puts 0.031 on its largest key; 1/33 is
# 0.030), and a cache that shifts RoPE positions by one on cached chunks leaves every greedy token
# of the 24 unchanged and moves the logits by 9e-5 to 5e-2 (under LOGIT_TOLERANCE for mla and
# minimax01). At 0.2 the scores are ~N(0, 2.6^2): the largest key holds ~0.49, and the same bug
# changes the tokens of all 8 layouts with RoPE and moves their logits by 0.1 to 3.6 before the
# first changed token (lightning has no positions). tests/test_demo.py plants it.
PEAKED_INIT = 0.2
# fp32, logits up to ~10: the cached and uncached paths sum in different orders (chunked prefill,
# one-token steps), measured up to 2e-5 apart (~25 ulps of the largest logit); 1e-3 leaves 50x
# room above that and sits four orders of magnitude below a one-position RoPE error.
LOGIT_TOLERANCE = 1e-3


def demo_config(spec: dict):
    from ..archs import AttnLabConfig

    n = len(spec["layers"])
    return AttnLabConfig(
        vocab_size=256,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=n if n > 1 else 2,
        initializer_range=PEAKED_INIT,
        **spec,
    )


@dataclass
class CacheCheck:
    tokens_equal: bool
    max_abs_logit_diff: float
    seconds: float  # the cached generate()

    @property
    def passed(self) -> bool:
        return self.tokens_equal and self.max_abs_logit_diff <= LOGIT_TOLERANCE


def check_cache(model, prompt, new_tokens: int) -> CacheCheck:
    """Cached `generate()` against a loop that re-runs the whole sequence each step (no cache, so
    no cache bug can reach it): the same greedy tokens, and every step's logits within
    LOGIT_TOLERANCE. Logits are compared up to the first step whose tokens differ (after it the
    two paths continue different sequences)."""
    from ..archs import greedy_decode

    start = time.perf_counter()
    cached = greedy_decode(model, prompt, new_tokens, output_logits=True)
    seconds = time.perf_counter() - start
    reference = greedy_decode(model, prompt, new_tokens, use_cache=False, output_logits=True)
    differ = (cached.tokens != reference.tokens).any(0).nonzero()
    upto = int(differ[0]) + 1 if len(differ) else new_tokens
    diff = (cached.logits[:, :upto] - reference.logits[:, :upto]).abs().max().item()
    return CacheCheck(not len(differ), diff, seconds)


def run_demo(out_dir: Path, new_tokens: int = 24) -> list[dict]:
    import torch

    from ..archs import AttnLabForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    prompt = torch.tensor([list(b"attnlab: one model, many mixers. ")])
    rows = []
    for name, spec in DEMO_VARIANTS.items():
        torch.manual_seed(0)
        model = AttnLabForCausalLM(demo_config(spec)).eval()
        check = check_cache(model, prompt, new_tokens)
        rows.append(
            {
                "variant": name,
                "layers": "".join(m.mixer_type[0].upper() for m in model.mixers()),
                "params": sum(p.numel() for p in model.parameters()),
                "tokens_equal": check.tokens_equal,
                "max_abs_logit_diff": check.max_abs_logit_diff,
                "cache_matches_no_cache": check.passed,
                "generate_tokens_per_s": round(new_tokens / check.seconds, 1),
                **{f"cache_bytes@{t}": model.state_bytes(t, torch.bfloat16) for t in CONTEXTS},
            }
        )
        verdict = "yes" if check.passed else "NO"
        print(
            f"  {name:24s} cache==no-cache: {verdict} (max |Δlogit| {check.max_abs_logit_diff:.1e})",
            flush=True,
        )
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
    head = ["variant", "layers", "params", "tokens equal", "max \\|Δlogit\\|"]
    head += [f"cache/seq @{t} (bf16)" for t in CONTEXTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["variant"],
            r["layers"],
            f"{r['params']:,}",
            "yes" if r["tokens_equal"] else "NO",
            f"{r['max_abs_logit_diff']:.1e}" + ("" if r["cache_matches_no_cache"] else " FAIL"),
        ]
        cells += [human_bytes(r[f"cache_bytes@{t}"]) for t in CONTEXTS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
