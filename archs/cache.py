"""AttnLabCache: one HF `Cache` holding each layer's own kind of state (kv, window, recurrent,
latent, composite). `generate()` carries it between steps; mixers only see their layer's state
(the protocol in archs/state.py).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from .state import DenseState


class AttnLabCache(Cache):
    is_compileable = False

    def __init__(self, states: list[DenseState]):
        super().__init__(layers=[])
        self.states = states

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, layer_idx: int) -> DenseState:
        return self.states[layer_idx]

    def __repr__(self) -> str:
        kinds = ",".join(s.kind for s in self.states)
        return f"AttnLabCache(seq_len={self.get_seq_length()}, kinds=[{kinds}], bytes={self.nbytes()})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.states[layer_idx].seq_len if self.states else 0

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    # generate() asks these to decide how to slice inputs; every layer tracks its token count.
    @property
    def is_linear(self) -> list[bool]:
        return [False] * len(self.states)

    @property
    def is_sliding(self) -> list[bool]:
        return [s.kind == "window" for s in self.states]

    @property
    def is_initialized(self) -> bool:
        return True

    @property
    def is_croppable(self) -> bool:
        return all(s.croppable for s in self.states)

    def nbytes(self) -> int:
        """Bytes this cache really holds, over all layers and the whole batch."""
        return sum(s.nbytes() for s in self.states)

    def crop(self, max_length: int) -> None:
        if max_length < 0:
            max_length = self.get_seq_length() + max_length
        if not self.is_croppable:
            raise RuntimeError(
                "AttnLabCache.crop: window/recurrent state cannot be rolled back by cropping; "
                "speculative decoding with such layers needs per-token state checkpoints (serve/)"
            )
        for s in self.states:
            s.crop(max_length)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for s in self.states:
            s.index_select(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        for s in self.states:
            s.repeat_interleave(repeats)

    def reset(self) -> None:
        raise RuntimeError("AttnLabCache.reset: build a new cache with model.new_cache(batch) instead")
