"""Text deltas for streaming: each step's new tokens as the text they add, held back while unsure.

Two things can make the next step's text differ from this step's: a multi-byte character split
across tokens (decoded as U+FFFD until its last byte arrives) and a stop string still being
matched (the engine cuts the text where a stop string starts). Both are held back until resolved,
so the concatenated deltas always equal the finished request's text.
"""

from __future__ import annotations

from .request import RequestOutput

_REPLACEMENT = "\ufffd"


class TextDeltas:
    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = stop
        self.sent = 0  # characters already handed out

    def delta(self, out: RequestOutput) -> str:
        if out.finished:
            text = out.text or ""
        else:
            text = self.tokenizer.decode(out.token_ids, skip_special_tokens=True)
            text = text.rstrip(_REPLACEMENT)
            text = text[: len(text) - self._partial_stop(text)]
        if len(text) <= self.sent:
            return ""
        new, self.sent = text[self.sent :], len(text)
        return new

    def _partial_stop(self, text: str) -> int:
        """Length of the longest tail of `text` that begins some stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:k]):
                    longest = k
                    break
        return longest
