"""Expert-weight traffic of an MoE model in the engine: how many experts each MoE layer call loads.

An MoE layer reads the weights of every expert that at least one of its tokens routes to, once
per call, however many tokens that expert takes. `ExpertTraffic` hooks the routers and counts,
per call, the distinct experts of the prefill rows (rows after the step's one-token sequences)
and of all rows:

    with ExpertTraffic(engine) as t:
        ... engine.step() ...
    t.prefill_bytes / t.prefill_tokens  # expert-weight bytes read per prompt token

A router's top-k over its logits equals the top-k over its softmax, so nothing is recomputed.
"""

from __future__ import annotations

from ..archs import MoEFFN
from ..quant import weight_bytes


class ExpertTraffic:
    def __init__(self, engine):
        self.engine = engine
        self.moe = [layer.ffn for layer in engine.model.model.layers if isinstance(layer.ffn, MoEFFN)]
        first = self.moe[0].experts[0] if self.moe else None
        self.expert_bytes = 0 if first is None else weight_bytes(first)  # INT4 experts: packed bytes
        self.loads = 0  # experts loaded, every call, every row
        self.prefill_loads = 0  # experts loaded for the prefill rows
        self.prefill_tokens = 0  # prompt tokens that passed the first MoE layer
        self._hooks = []

    def __enter__(self) -> ExpertTraffic:
        for i, ffn in enumerate(self.moe):
            self._hooks.append(ffn.router.register_forward_hook(self._counter(ffn.top_k, first=i == 0)))
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _counter(self, top_k: int, first: bool):
        def count(module, inputs, logits):  # logits [N, E]
            chosen = logits.topk(top_k, dim=-1).indices  # [N, k]
            batch = self.engine.runner.holder.batch
            nd = 0 if batch is None else batch.num_decode
            self.loads += chosen.unique().numel()
            if chosen.shape[0] > nd:
                self.prefill_loads += chosen[nd:].unique().numel()
                if first:
                    self.prefill_tokens += chosen.shape[0] - nd

        return count

    @property
    def bytes(self) -> int:
        return self.loads * self.expert_bytes

    @property
    def prefill_bytes(self) -> int:
        return self.prefill_loads * self.expert_bytes
