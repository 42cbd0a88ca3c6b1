"""Teacher forcing through the engine: given token sequences, one token per step, as decodes.

Studies of the cache itself (state precision, docs/state_precision.md) need the engine's own
storage path, not the dense `generate()` one, and need every run to see the same tokens so their
logits stay comparable after a first disagreement. A `TeacherForcer` admits N sequences, prefills
the first `prefill` tokens of each as one chunk, then feeds one given token per sequence per
`step()`, every step going through the slots' store and load exactly as a served decode does.

    forcer = TeacherForcer(engine, sequences, prefill=16)
    while not forcer.done:
        logits = forcer.step()          # [N, V]: next-token logits after the token just fed
        states = forcer.states()        # fp32 [N, H, K, V] per recurrent layer (or part)
    forcer.close()                      # frees every block and slot
"""

from __future__ import annotations

import torch

from .layer_states import Composite, SlotRecurrent
from .request import Metrics, Request, now
from .sampling import SamplingParams


def recurrent_layer_states(states: list) -> list[SlotRecurrent]:
    """The runner's SlotRecurrent states, flattened through intra-layer composites, in layer order."""
    out = []
    for s in states:
        if isinstance(s, Composite):
            out.extend(recurrent_layer_states(s.parts))
        elif isinstance(s, SlotRecurrent):
            out.append(s)
    return out


class TeacherForcer:
    def __init__(self, engine, sequences: list[list[int]], prefill: int = 1):
        lengths = {len(s) for s in sequences}
        if len(lengths) != 1:
            raise ValueError(f"sequences must have one length; got lengths {sorted(lengths)}")
        (self.length,) = lengths
        if not 1 <= prefill <= self.length:
            raise ValueError(f"prefill = {prefill}: must be in 1..{self.length} (the sequence length)")
        if self.length > engine.max_model_len:
            raise ValueError(
                f"sequences of {self.length} tokens exceed max_model_len = {engine.max_model_len}"
            )
        if len(sequences) > engine.cache.max_seqs:
            raise ValueError(f"{len(sequences)} sequences exceed the cache's {engine.cache.max_seqs} slots")
        self.engine, self.cache, self.runner = engine, engine.cache, engine.runner
        params = SamplingParams(max_tokens=1)
        self.requests = [
            Request(f"forced-{i}", None, list(map(int, s)), params, None, Metrics(now()))
            for i, s in enumerate(sequences)
        ]
        for req in self.requests:
            if not self.cache.has_free_slot():
                self.close()
                raise ValueError("the cache budget cannot hold these sequences; raise cache_memory")
            self.cache.admit(req.request_id)
            if not self.cache.can_extend(req.request_id, 0, prefill):
                self.close()
                raise ValueError("the cache budget cannot hold these sequences; raise cache_memory")
        self.prefill = prefill
        self.position = 0  # tokens fed so far (per sequence)

    @property
    def done(self) -> bool:
        return self.position >= self.length

    def step(self) -> torch.Tensor:
        """Feed the next token of each sequence (the first call: the prefill chunk) -> logits [N, V]."""
        if self.done:
            raise RuntimeError("every token has been fed")
        n = self.prefill if self.position == 0 else 1
        for req in self.requests:
            if not self.cache.can_extend(req.request_id, self.position, n):
                raise RuntimeError("the cache ran out of blocks; raise cache_memory")
            self.cache.extend(req.request_id, self.position, n)
        logits = self.runner.run([(req, n) for req in self.requests])
        self.position += n
        for req in self.requests:
            req.num_computed = self.position
            self.cache.trim(req.request_id, self.position)
        return logits

    def slot_ids(self) -> torch.Tensor:
        slots = [self.cache.holdings[r.request_id].slot for r in self.requests]
        return torch.tensor(slots, dtype=torch.int64, device=self.cache.device)

    def states(self) -> list[torch.Tensor]:
        """fp32 [N, H, K, V] of every recurrent layer (part), as the next step will load them."""
        ids = self.slot_ids()
        return [s.load(ids) for s in recurrent_layer_states(self.runner.states)]

    def close(self) -> None:
        for req in self.requests:
            self.cache.free(req.request_id)
