"""The OpenAI API's request bodies (completions, chat) as strict pydantic models, and its errors.

Strict: a string where a number belongs is an error, not a conversion, and an argument the API does
not know is rejected ("Unrecognized request argument supplied: …"), as OpenAI's own server does.
Arguments OpenAI knows but this engine cannot honour (logit_bias, penalties, best_of > n, echo,
suffix, tools) are rejected with a message saying so rather than silently ignored. vLLM's sampling
extensions that load generators send (top_k, min_tokens, ignore_eos, stop_token_ids) are accepted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .sampling import SamplingParams


class ApiError(Exception):
    """An error answered with an OpenAI-style body: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    n: int = Field(1, ge=1, le=128)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    # vLLM extensions (benchmark clients send them)
    top_k: int = Field(0, ge=-1)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None

    def _unsupported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ApiError(400, f"{name} is not supported by this server; leave it 0", name)
        if self.logit_bias:
            raise ApiError(400, "logit_bias is not supported by this server", "logit_bias")
        if self.stream_options is not None and not self.stream:
            raise ApiError(400, "stream_options is only allowed when stream is true", "stream_options")

    def sampling_params(self, max_tokens: int, logprobs: int | None, choice: int) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stop):
            raise ApiError(400, "stop strings must be non-empty", "stop")
        if self.min_tokens > max_tokens:
            raise ApiError(400, f"min_tokens ({self.min_tokens}) > max_tokens ({max_tokens})", "min_tokens")
        try:
            return self._params(max_tokens, logprobs, choice, stop)
        except ValueError as e:  # SamplingParams' own checks (e.g. negative stop_token_ids)
            raise ApiError(400, str(e), str(e).split(" ", 1)[0]) from None

    def _params(self, max_tokens: int, logprobs: int | None, choice: int, stop: list[str]) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=max(self.top_k, 0),
            # n choices of one seeded request must differ from each other, and repeat across calls.
            seed=None if self.seed is None else self.seed + choice,
            stop=stop,
            stop_token_ids=list(self.stop_token_ids or []),
            min_tokens=self.min_tokens,
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
        )

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    def check(self) -> None:
        self._unsupported()
        if self.echo:
            raise ApiError(400, "echo is not supported by this server", "echo")
        if self.suffix:
            raise ApiError(400, "suffix is not supported by this server", "suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise ApiError(400, "best_of other than n is not supported by this server", "best_of")

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a batch: a string, a list of token ids, or a list of either."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        if not p:
            raise ApiError(400, "prompt is empty: give a string or at least one token id", "prompt")
        return list(p)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict | None = None

    def check(self) -> None:
        self._unsupported()
        if self.tools or self.tool_choice not in (None, "none"):
            raise ApiError(400, "tool calling is not supported by this server", "tools")
        if self.response_format and self.response_format.get("type") != "text":
            raise ApiError(400, "only response_format {'type': 'text'} is supported", "response_format")
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


_TYPE_TAGS = {
    "str",
    "int",
    "float",
    "bool",
    "list[int]",
    "list[str]",
    "list[list[int]]",
    "list[TextPart]",
    "none",
}


def parse(model: type[_Strict], body: Any) -> _Strict:
    """The request body as `model`, or an ApiError naming the first offending field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err["loc"]
        param = str(loc[0]) if loc else None
        # Keep list indices and nested field names, drop union member names like 'list[int]'.
        where = (param or "") + "".join(
            f"[{x}]" if isinstance(x, int) else f".{x}"
            for x in loc[1:]
            if isinstance(x, int) or x not in _TYPE_TAGS
        )
        if err["type"] == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {where}"
        elif err["type"] == "missing":
            message = f"missing required argument: {where}"
        else:
            got = repr(err.get("input"))
            message = f"{where}: {err['msg']} (got {got if len(got) < 80 else got[:77] + '...'})"
        raise ApiError(400, message, param) from None
