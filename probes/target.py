"""One interface over the models probes run on: attnlab models and Hugging Face causal LMs.

    target = ProbeTarget.wrap(model)
    out = target.run(ids, cache=None, maps=True)   # logits [B, t, V], cache, maps[l] [B, H_l, t, S]
    with target.flags(heads, "uniform"): ...       # ablation: Wu et al. uniform, or "zero"

`run` continues the cache it is given; the maps hold the rows of the t new queries over all S keys
seen so far, so a full forward (cache=None) gives the [T, T] maps and a decode step gives the last
row, the one the retrieval score reads. Heads per layer come from the model itself (attnlab: each
mixer's `num_heads`; HF: the query heads seen in a dry run), never from hard-coded counts.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .hf_attention import FLAGS_ATTR, IMPLEMENTATION, HeadFlags, record_attention_calls
from .modes import MODES


@dataclass
class RunOutput:
    logits: torch.Tensor  # [B, t, V]
    cache: object
    maps: list[torch.Tensor] | None  # per layer [B, H_l, t, S]


class ProbeTarget:
    kind: str
    heads_per_layer: list[int]

    def __init__(self, model):
        self.model = model.eval()
        self.config = model.config
        self.device = next(model.parameters()).device
        params = inspect.signature(model.forward).parameters
        # transformers >= 5.24 names the cache `cache`; earlier releases `past_key_values`.
        self.cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @staticmethod
    def wrap(model) -> ProbeTarget:
        if getattr(model.config, "model_type", None) == "attnlab":
            return AttnLabTarget(model)
        return HFTarget(model)

    # --- model facts ----------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.heads_per_layer)

    def all_heads(self) -> list[tuple[int, int]]:
        return [(l, h) for l, n in enumerate(self.heads_per_layer) for h in range(n)]

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[0]

    @property
    def max_context(self) -> int | None:
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(self.config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def special_ids(self) -> set[int]:
        ids = set()
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self.config, name, None)
            ids.update(value if isinstance(value, (list, tuple)) else [value])
        return {i for i in ids if isinstance(i, int) and 0 <= i < self.vocab_size}

    @property
    def bos_id(self) -> int | None:
        """Prepended to probe sequences when the model has one (TransformerLens does the same)."""
        bos = getattr(self.config, "bos_token_id", None)
        return bos if isinstance(bos, int) and 0 <= bos < self.vocab_size else None

    def token_pool(self) -> torch.Tensor:
        """Token ids probes may draw: the vocabulary without special tokens. [P] int64."""
        special = self.special_ids()
        return torch.tensor([i for i in range(self.vocab_size) if i not in special], dtype=torch.long)

    # --- running --------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, ids: torch.Tensor, cache=None, maps: bool = False) -> RunOutput:
        raise NotImplementedError

    def _forward(self, ids, cache, **kwargs):
        out = self.model(input_ids=ids.to(self.device), use_cache=True, **{self.cache_kwarg: cache}, **kwargs)
        new_cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
        return out, new_cache

    # --- ablation flags -------------------------------------------------------------------
    @contextmanager
    def flags(self, heads, mode: str):
        """Mask `heads` [(layer, head)] while the block runs: mode 'uniform' or 'zero'."""
        if mode not in MODES:
            raise ValueError(f"mask mode {mode!r}; allowed: {', '.join(MODES)}")
        per_layer: dict[int, list[int]] = {}
        for l, h in heads:
            if not (0 <= l < self.num_layers and 0 <= h < self.heads_per_layer[l]):
                raise ValueError(f"head ({l}, {h}) does not exist; heads per layer: {self.heads_per_layer}")
            per_layer.setdefault(l, []).append(h)
        self._set_flags(per_layer, mode)
        try:
            yield
        finally:
            self._clear_flags()

    def _set_flags(self, per_layer: dict[int, list[int]], mode: str) -> None:
        raise NotImplementedError

    def _clear_flags(self) -> None:
        raise NotImplementedError


class AttnLabTarget(ProbeTarget):
    """Maps from `mixer.attention_map(x)` on the inputs each mixer saw (captured by pre-hooks).

    A decode step's map needs every key's input, so the captured inputs of a cache session are
    kept per layer (`_history`) and the map is computed over the whole history; only the rows of
    the new queries are returned. Lightning heads give their implied map: unnormalised and signed.
    """

    kind = "attnlab"

    def __init__(self, model):
        super().__init__(model)
        self.mixers = model.mixers()
        self.heads_per_layer = [m.num_heads for m in self.mixers]
        self._history: list[torch.Tensor | None] = [None] * len(self.mixers)

    @torch.no_grad()
    def run(self, ids, cache=None, maps=False):
        t = ids.shape[1]
        captured: list[torch.Tensor | None] = [None] * len(self.mixers)

        def hook_for(i):
            def hook(module, args, kwargs):
                captured[i] = args[0] if args else kwargs["x"]

            return hook

        handles = [
            m.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i, m in enumerate(self.mixers)
        ]
        try:
            out, new_cache = self._forward(ids, cache)
        finally:
            for handle in handles:
                handle.remove()
        if cache is None:
            self._history = captured
        else:
            self._history = [
                torch.cat([old, new], dim=1) for old, new in zip(self._history, captured, strict=True)
            ]
        layer_maps = None
        if maps:
            # x [B, S, D] -> map [B, H, S, S]; keep the rows of the t new queries
            layer_maps = [
                m.attention_map(x)[:, :, -t:].float() for m, x in zip(self.mixers, self._history, strict=True)
            ]
        return RunOutput(out.logits, new_cache, layer_maps)

    def _set_flags(self, per_layer, mode):
        for l, heads in per_layer.items():
            mixer = self.mixers[l]
            for h in heads:
                if mode == "uniform":
                    mixer.head_uniform[h] = True
                else:
                    mixer.head_mask[h] = 0.0

    def _clear_flags(self):
        for mixer in self.mixers:
            mixer.head_uniform.fill_(False)
            mixer.head_mask.fill_(1.0)


class HFTarget(ProbeTarget):
    """Eager attention through attnlab's AttentionInterface function (probes/hf_attention.py).

    Wrapping switches the model's attention implementation to it (in place): without flags it
    computes exactly eager attention, and it returns the maps `output_attentions` needs.
    """

    kind = "hf"

    def __init__(self, model):
        super().__init__(model)
        if getattr(self.config, "_attn_implementation", None) != IMPLEMENTATION:
            model.set_attn_implementation(IMPLEMENTATION)
        if getattr(self.config, "_attn_implementation", None) != IMPLEMENTATION:
            raise ValueError(
                f"{type(model).__name__} cannot switch its attention implementation; probes need a model "
                "built on transformers' AttentionInterface (most decoder LMs in transformers >= 5)"
            )
        with record_attention_calls() as calls, torch.no_grad():
            self.model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=self.device), use_cache=False)
        self.attention_modules = [module for module, _ in calls]
        self.heads_per_layer = [heads for _, heads in calls]
        if not self.attention_modules:
            raise ValueError(f"{type(model).__name__}: no attention layer ran through the AttentionInterface")

    @torch.no_grad()
    def run(self, ids, cache=None, maps=False):
        out, new_cache = self._forward(ids, cache, output_attentions=maps)
        layer_maps = [a.float() for a in out.attentions] if maps else None
        if layer_maps is not None:
            assert len(layer_maps) == self.num_layers, "attentions do not match the recorded attention layers"
        return RunOutput(out.logits, new_cache, layer_maps)

    def _set_flags(self, per_layer, mode):
        for l, heads in per_layer.items():
            n = self.heads_per_layer[l]
            uniform = torch.zeros(n, dtype=torch.bool)
            keep = torch.ones(n)
            for h in heads:
                if mode == "uniform":
                    uniform[h] = True
                else:
                    keep[h] = 0.0
            setattr(
                self.attention_modules[l],
                FLAGS_ATTR,
                HeadFlags(uniform.to(self.device), keep.to(self.device)),
            )

    def _clear_flags(self):
        for module in self.attention_modules:
            if hasattr(module, FLAGS_ATTR):
                delattr(module, FLAGS_ATTR)
