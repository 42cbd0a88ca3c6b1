"""The offline API: `LLM(path_or_model).generate(prompts, params)`.

from attnlab.serve import LLM, SamplingParams
llm = LLM("runs/my-run", cache_memory="512MiB")
outs = llm.generate(["The cat", [1, 2, 3]], SamplingParams(max_tokens=32))
outs[0].text, outs[0].token_ids, outs[0].metrics.ttft
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from .config import EngineConfig
from .engine import LLMEngine
from .request import RequestOutput
from .sampling import SamplingParams


def load_for_serving(path: str | Path, device: str | None = None):
    """-> (model, tokenizer or None) from an attnlab run dir or model folder."""
    from ..evals import load_model

    model, tokenizer, _ = load_model(path, device)
    return model, tokenizer


class LLM:
    def __init__(
        self, model, tokenizer=None, *, device: str | None = None, draft_model=None, **engine_options
    ):
        """`model`: a path (attnlab run dir or model folder) or a loaded AttnLabForCausalLM.
        `draft_model`: for `speculative="draft"`, a path or a loaded model.
        `engine_options`: EngineConfig fields (cache_memory, block_size, max_num_seqs,
        max_num_batched_tokens, max_model_len, state_dtype, state_rounding, state_scales,
        enable_prefix_caching, prefix_eviction, state_checkpoint_interval, speculative,
        num_speculative_tokens, ngram_max, ngram_min, schedule, layer_groups)."""
        if isinstance(model, (str, Path)):
            model, loaded_tokenizer = load_for_serving(model, device)
            tokenizer = tokenizer or loaded_tokenizer
        if isinstance(draft_model, (str, Path)):
            engine_options["draft_model"], draft_model = str(draft_model), None
        self.engine = LLMEngine(model, tokenizer, EngineConfig(**engine_options), draft_model=draft_model)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: str | list[int] | list,
        params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """One output per prompt, in order. A prompt is a string or a list of token ids."""
        if isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]
        params = params or SamplingParams()
        if isinstance(params, list) and len(params) != len(prompts):
            raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        ids = [self.engine.add_request(p, sp) for p, sp in zip(prompts, per_prompt, strict=True)]
        done: dict[str, RequestOutput] = {}
        with tqdm(total=len(ids), desc="generate", unit="req", disable=not use_tqdm) as bar:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.finished:
                        done[out.request_id] = out
                        bar.update(1)
        return [done[i] for i in ids]
