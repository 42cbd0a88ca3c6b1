"""One text-task sample: the prompt (exactly `length` tokens), its references and metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

METRICS = ("string_match_all", "string_match_part")


@dataclass(frozen=True)
class TextSample:
    task: str
    prompt: str  # exactly `length` tokens under the tokenizer it was generated for
    answers: tuple[str, ...]  # references; scored with `metric`
    metric: str
    length: int
    hops: int
    meta: dict = field(default_factory=dict)  # depth (percent), variant, chains, ...

    def __post_init__(self):
        assert self.metric in METRICS, self.metric
        assert self.answers and all(isinstance(a, str) and a for a in self.answers)

    @property
    def target(self) -> str:
        """The continuation a perfect model writes after the prompt."""
        return " " + ", ".join(self.answers)

    def to_json(self) -> dict:
        return {**asdict(self), "answers": list(self.answers)}
