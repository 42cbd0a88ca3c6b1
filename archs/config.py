"""AttnLabConfig: one HF config for every layout of mixers (README "Models").

`layers` is a list of per-layer mixer specs, or a pattern string whose letters are keys of
`mixers` (defaults: F full, M mla, L lightning, S swa, I intra). A pattern whose length divides
`num_hidden_layers` is repeated; any other length is an error.

Presets for the published layouts (MiniMax-01 7:1, GPT-OSS 1:1, Gemma 3 5:1, Qwen3-Next 3:1)
are in `archs/presets.py`.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import PreTrainedConfig

from ..common import check_choice, check_positive_int
from .families import mixer_types, resolve_spec

DEFAULT_MIXERS: dict[str, dict] = {
    "F": {"type": "full"},
    "M": {"type": "mla"},
    "L": {"type": "lightning"},
    "S": {"type": "swa"},
    "I": {"type": "intra"},
}

FFN_TYPES = ("dense", "moe")


def expand_layers(layers: Any, mixers: dict, num_layers: int) -> list[dict]:
    """Pattern string or list of specs -> one spec dict per layer."""
    table = {**DEFAULT_MIXERS, **(mixers or {})}
    if isinstance(layers, str):
        if not layers:
            raise ValueError("layers = '': the pattern must have at least one letter")
        unknown = sorted(set(layers) - set(table))
        if unknown:
            raise ValueError(
                f"layers pattern {layers!r} uses letter(s) {unknown} that are not keys of mixers; "
                f"allowed letters: {''.join(sorted(table))}"
            )
        if num_layers % len(layers):
            raise ValueError(
                f"layers pattern {layers!r} has length {len(layers)}, which does not divide "
                f"num_hidden_layers = {num_layers}; use a pattern whose length divides it, "
                f"or one spec per layer"
            )
        return [copy.deepcopy(table[c]) for c in layers * (num_layers // len(layers))]
    if isinstance(layers, (list, tuple)):
        if len(layers) != num_layers:
            raise ValueError(
                f"layers has {len(layers)} specs but num_hidden_layers = {num_layers}; give one spec per layer"
            )
        return [
            copy.deepcopy(table[s]) if isinstance(s, str) and s in table else copy.deepcopy(s) for s in layers
        ]
    raise ValueError(f"layers must be a pattern string or a list of mixer specs, got {type(layers).__name__}")


class AttnLabConfig(PreTrainedConfig):
    model_type = "attnlab"

    def __init__(
        self,
        vocab_size: int = 256,
        hidden_size: int = 128,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        layers: str | list = "F",
        mixers: dict | None = None,
        intermediate_size: int | None = None,
        ffn: str = "dense",
        num_experts: int = 8,
        num_experts_per_tok: int = 2,
        shared_expert: bool = False,
        router_aux_loss_coef: float = 0.01,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-6,
        max_position_embeddings: int = 8192,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
        use_cache: bool = True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.head_dim = head_dim
        self.layers = layers
        self.mixers = mixers or {}
        self.intermediate_size = intermediate_size
        self.ffn = ffn
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.shared_expert = shared_expert
        self.router_aux_loss_coef = router_aux_loss_coef
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self._validate_globals()
        if self.head_dim is None:
            self.head_dim = hidden_size // num_attention_heads
        if self.intermediate_size is None:
            # SwiGLU width ~ 8/3 d, rounded up to a multiple of 32 (LLaMA convention).
            self.intermediate_size = 32 * -(-(8 * hidden_size // 3) // 32)
        self.layer_specs = self._resolve_layer_specs()
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def _validate_globals(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
        ):
            check_positive_int(getattr(self, name), f"config.{name}")
        if self.head_dim is not None:
            check_positive_int(self.head_dim, "config.head_dim")
        elif self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"config.num_attention_heads = {self.num_attention_heads} does not divide hidden_size = "
                f"{self.hidden_size}; choose heads that divide it or set head_dim explicitly"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"config.num_key_value_heads = {self.num_key_value_heads} must divide "
                f"num_attention_heads = {self.num_attention_heads}"
            )
        check_choice(self.ffn, FFN_TYPES, "config.ffn")
        if self.ffn == "moe":
            check_positive_int(self.num_experts, "config.num_experts")
            check_positive_int(self.num_experts_per_tok, "config.num_experts_per_tok")
            if self.num_experts_per_tok > self.num_experts:
                raise ValueError(
                    f"config.num_experts_per_tok = {self.num_experts_per_tok} exceeds num_experts = "
                    f"{self.num_experts}; allowed: 1..{self.num_experts}"
                )
        if self.intermediate_size is not None:
            check_positive_int(self.intermediate_size, "config.intermediate_size")
        if not isinstance(self.mixers, dict):
            raise ValueError(
                f"config.mixers must be a dict of letter -> spec, got {type(self.mixers).__name__}"
            )
        for key in self.mixers:
            if not isinstance(key, str) or len(key) != 1:
                raise ValueError(
                    f"config.mixers key {key!r} must be a single letter used in the layers pattern"
                )

    def spec_defaults(self) -> dict:
        """Model-wide values a mixer spec inherits for the fields it leaves unset."""
        return {
            "num_heads": self.num_attention_heads,
            "num_kv_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
        }

    def _resolve_layer_specs(self) -> list:
        specs = expand_layers(self.layers, self.mixers, self.num_hidden_layers)
        return [resolve_spec(s, self.spec_defaults(), f"layers[{i}]") for i, s in enumerate(specs)]

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.pop("layer_specs", None)  # derived; rebuilt from layers + mixers on load
        return out

    @staticmethod
    def allowed_mixer_types() -> list[str]:
        return mixer_types()
