"""`--model attnlab` for lm-eval: an attnlab run dir or HF model folder behind lm-eval's LM API.

Why not lm-eval's `hf` model: it left-pads generation batches, which attnlab models reject (their
recurrent and windowed caches need every row to start at position 0). This adapter instead batches
requests of equal token length unpadded (every cell of the attnlab suite is one length) and
right-pads loglikelihood batches, which is harmless for a causal model. `hf` still works with
batch_size=1.

model_args: pretrained=PATH (required), device, batch_size, dtype (float32|bfloat16|float16).
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from .generation import encode, greedy_generate

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@register_model("attnlab")
class AttnLabLM(LM):
    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        batch_size: int | str = 8,
        max_batch_size: int | None = None,
        dtype: str = "float32",
        **_ignored,
    ):
        super().__init__()
        from .loading import load_model

        if dtype not in DTYPES:
            raise ValueError(f"attnlab model_args dtype={dtype!r}; allowed: {', '.join(DTYPES)}")
        if device in (None, "cuda", "cuda:0") and not torch.cuda.is_available():
            device = "cpu"  # lm-eval's CLI default is cuda:0
        self.model, self.tokenizer, self.model_dir = load_model(pretrained, device)
        if self.tokenizer is None:
            raise ValueError(
                f"attnlab model_args pretrained={pretrained}: no tokenizer in {self.model_dir} (a model trained "
                "only on token tasks such as MQAR); lm-eval tasks are text: save a tokenizer with the model"
            )
        self.model.to(DTYPES[dtype])
        self.batch_size = 8 if str(batch_size).startswith("auto") else int(batch_size)
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 8192))
        bos = self.tokenizer.bos_token_id
        self.prefix_token = bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- generation ---------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        # one greedy_generate call per distinct generation setting; it groups prompts by length
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            _context, kwargs = request.args
            until = kwargs.get("until") or []
            until = (until,) if isinstance(until, str) else tuple(until)
            if kwargs.get("do_sample"):
                raise ValueError(
                    "attnlab lm-eval model: only greedy decoding (do_sample: false) is supported"
                )
            groups[(int(kwargs.get("max_gen_toks", 256)), until)].append(i)
        results: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm)
        for (max_new, until), indices in groups.items():
            prompts = [requests[i].args[0] for i in indices]
            outs = greedy_generate(
                self.model, self.tokenizer, prompts, max_new, self.batch_size, stop=until, on_batch=bar.update
            )
            for i, text in zip(indices, outs, strict=True):
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, results[i])
        bar.close()
        return results

    # --- scoring ------------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = []
        for request in requests:
            context, continuation = request.args
            ctx = encode(self.tokenizer, context) if context else [self.prefix_token]
            pairs.append((ctx, encode(self.tokenizer, continuation)))
        results = self.score_tokens(pairs, disable_tqdm)
        for request, result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for request in tqdm(requests, desc="loglikelihood_rolling", disable=disable_tqdm):
            (text,) = request.args
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    encode(self.tokenizer, text), self.prefix_token, self.max_length, 1
                )
            ]
            out.append(sum(logprob for logprob, _ in self.score_tokens(windows, disable_tqdm=True)))
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, out[-1])
        return out

    @torch.no_grad()
    def score_tokens(
        self, pairs: list[tuple[list[int], list[int]]], disable_tqdm: bool
    ) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (sum log p(continuation), whether greedy decoding
        reproduces it). Batches are right-padded; contexts are cut from the left to fit."""
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        for start in tqdm(range(0, len(order), self.batch_size), desc="loglikelihood", disable=disable_tqdm):
            batch = order[start : start + self.batch_size]
            rows = [(pairs[i][0] + pairs[i][1])[-(self.max_length + 1) :][:-1] for i in batch]
            width = max(map(len, rows))
            ids = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)  # [B, W] right-padded
            mask = torch.zeros_like(ids)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            logprobs = F.log_softmax(
                self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1
            )
            for r, i in enumerate(batch):
                cont = pairs[i][1]
                end = len(rows[r])
                lp = logprobs[r, end - len(cont) : end]  # [C, V]: predictions of the continuation
                target = torch.tensor(cont, device=self.device)
                total = lp.gather(-1, target[:, None]).sum().item()
                results[i] = (total, bool((lp.argmax(-1) == target).all()))
        return results
