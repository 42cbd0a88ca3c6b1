"""AttnLabForCausalLM: one decoder for every layout of mixers, as a Hugging Face model.

Pre-norm blocks: x += mixer(norm(x)); x += ffn(norm(x)). Each layer's mixer is built from its
resolved spec (`config.layer_specs`), so hybrids are just per-layer lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..quant import is_int4_config, load_int4
from .cache import AttnLabCache
from .config import AttnLabConfig
from .families import build_mixer
from .ffn import build_ffn
from .mixer import Mixer
from .norms import RMSNorm
from .rope import shared_rope_tables

# transformers >= 5.24 names the cache field/kwarg `cache`; earlier 5.x releases `past_key_values`.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class AttnLabCausalLMOutput(CausalLMOutputWithPast):
    aux_loss: torch.FloatTensor | None = None


class AttnLabBlock(nn.Module):
    def __init__(self, config: AttnLabConfig, layer_idx: int):
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mixer = build_mixer(
            config.layer_specs[layer_idx], layer_idx, config.num_hidden_layers, config.hidden_size
        )
        self.post_mixer_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.ffn = build_ffn(config)

    def forward(self, x, state=None, positions=None):
        y, _ = self.mixer(self.input_norm(x), state=state, positions=positions)
        x = x + y
        y, aux = self.ffn(self.post_mixer_norm(x))
        return x + y, aux


class AttnLabPreTrainedModel(PreTrainedModel):
    config_class = AttnLabConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["AttnLabBlock"]

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # Our layers keep different kinds of state; the model builds its own AttnLabCache.
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # transformers.initialization skips tensors already loaded from a checkpoint.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        if isinstance(module, Mixer):
            init.ones_(module.head_mask)
            init.zeros_(module.head_uniform)
            if isinstance(getattr(module, "sinks", None), nn.Parameter):
                init.normal_(module.sinks, mean=0.0, std=std)  # GPT-OSS: sinks ~ N(0, 0.02)


class AttnLabModel(AttnLabPreTrainedModel):
    def __init__(self, config: AttnLabConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(AttnLabBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def forward(self, input_ids=None, inputs_embeds=None, cache=None, position_ids=None):
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # [B, T, D]
        aux = x.new_zeros((), dtype=torch.float32)
        if position_ids is None:  # one positions tensor for every layer, so they share RoPE tables
            b, t = x.shape[:2]
            position_ids = (
                torch.arange(t, device=x.device).expand(b, t)
                if cache is None
                else cache[0].positions(b, t, x.device)
            )
        with shared_rope_tables():
            for i, layer in enumerate(self.layers):
                x, layer_aux = layer(x, state=None if cache is None else cache[i], positions=position_ids)
                aux = aux + layer_aux
        return self.norm(x), aux


class AttnLabForCausalLM(AttnLabPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: AttnLabConfig):
        super().__init__(config)
        self.model = AttnLabModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' loader, except for an INT4 folder (config.json's quantization_config in
        compressed-tensors' pack-quantized format, docs/quantization.md): that one loads through
        attnlab.quant (Int4Linear modules holding the packed weights), so transformers' own
        compressed-tensors quantizer never runs. `dtype` is honoured there; the hub is not (a local
        folder only)."""
        config = kwargs.get("config")
        folder = Path(str(pretrained_model_name_or_path))
        saved = folder / "config.json"
        if config is None and saved.is_file() and is_int4_config(json.loads(saved.read_text())):
            config = cls.config_class.from_pretrained(str(folder))
        if isinstance(config, AttnLabConfig) and is_int4_config(config):
            if not (folder / "config.json").is_file():
                raise ValueError(
                    f"{folder}: INT4 (pack-quantized) attnlab models load from a local model folder"
                )
            return load_int4(cls, folder, config, dtype=kwargs.get("dtype", kwargs.get("torch_dtype")))
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    # --- cache and memory accounting ------------------------------------------------------
    def new_cache(self, batch: int = 1, dtype: torch.dtype | None = None) -> AttnLabCache:
        dtype = dtype or self.dtype
        return AttnLabCache([layer.mixer.new_state(batch, dtype) for layer in self.model.layers])

    def state_bytes(
        self,
        seq_len: int,
        dtype: torch.dtype | None = None,
        state_dtype: str = "fp32",
        state_scales: str = "row",
    ) -> int:
        """Exact bytes the cache holds for one sequence after `seq_len` tokens, all layers: K/V and
        latents in `dtype` (default the model's), recurrent states stored as `state_dtype` ("fp32",
        "bf16", "fp16", or "int8" with per-"row" or per-"block" fp32 scales)."""
        dtype = dtype or self.dtype
        return sum(
            layer.mixer.state_bytes(seq_len, dtype, state_dtype, state_scales) for layer in self.model.layers
        )

    def mixers(self) -> list[Mixer]:
        return [layer.mixer for layer in self.model.layers]

    # --- forward --------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: AttnLabCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: AttnLabCache | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> AttnLabCausalLMOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, AttnLabCache):
            raise ValueError(
                f"cache must be an AttnLabCache (from model.new_cache(batch)), got {type(cache).__name__}"
            )
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = self.new_cache(batch)
        check_no_left_padding(attention_mask)
        hidden, aux = self.model(input_ids, inputs_embeds, cache, position_ids)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])

        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
            if self.config.ffn == "moe":
                loss = loss + self.config.router_aux_loss_coef * aux
        out = {"loss": loss, "logits": logits, "aux_loss": aux, CACHE_FIELD: cache if use_cache else None}
        return AttnLabCausalLMOutput(**out)


def check_no_left_padding(attention_mask: torch.Tensor | None) -> None:
    """Right padding is harmless for a causal model; a 0 before a 1 would need per-row offsets."""
    if attention_mask is None or bool(attention_mask.all()):
        return
    # real_after[t] = 1 when some position > t holds a real token
    real_after = attention_mask.flip(-1).cummax(-1).values.flip(-1).roll(-1, dims=-1)
    real_after[..., -1] = 0
    if bool(((attention_mask == 0) & (real_after == 1)).any()):
        raise ValueError(
            "attention_mask has padding before real tokens (left padding); attnlab models accept "
            "unpadded or right-padded batches — use padding_side='right' or batch size 1"
        )


AutoConfig.register("attnlab", AttnLabConfig)
AutoModelForCausalLM.register(AttnLabConfig, AttnLabForCausalLM)
