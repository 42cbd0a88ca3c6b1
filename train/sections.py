"""The model, optim, trainer, eval and quant sections of a run config (`data:` is in data_sections.py).

Types are checked by the parser (config_io.py); value ranges here, in each section's
`__post_init__`, with errors that name the field (`optim.lr = -1: must be a positive number`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..archs import PRESETS, preset
from ..common import check_choice, check_fraction, check_positive, check_positive_int
from ..quant import QuantScheme, quant_field
from .data_sections import DataSection

SCHEDULES = ("cosine", "wsd", "constant")
# Lightning precision names that make sense for these models (fp64 for parity checks).
PRECISIONS = ("64-true", "32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")


@dataclass
class ModelSection:
    """AttnLabConfig fields; `preset` (archs/presets.py) supplies `layers` and `mixers` defaults."""

    preset: str | None = None
    layers: str | list | None = None  # pattern ("LF") or one mixer spec per layer; default "F"
    mixers: dict = field(default_factory=dict)  # letter -> spec, merged over the preset's
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    ffn: str = "dense"
    vocab_size: int | None = None  # None: the data's vocabulary (task vocab or tokenizer size)
    extra: dict = field(default_factory=dict)  # any other AttnLabConfig field (intermediate_size, …)

    def __post_init__(self) -> None:
        if self.preset is not None:
            check_choice(self.preset, tuple(sorted(PRESETS)), "model.preset")
        reserved = {f.name for f in dataclasses.fields(self)} & set(self.extra)
        if reserved:
            raise ValueError(f"model.extra sets {sorted(reserved)}; set them as model.<field> instead")
        self.hf_config(self.vocab_size or 256)  # validate now, so errors come before any training

    def hf_kwargs(self, data_vocab_size: int) -> dict:
        layout = preset(self.preset) if self.preset else {"layers": "F", "mixers": {}}
        return dict(
            vocab_size=self.vocab_size or data_vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            layers=self.layers if self.layers is not None else layout["layers"],
            mixers={**layout["mixers"], **self.mixers},
            ffn=self.ffn,
            **self.extra,
        )

    def hf_config(self, data_vocab_size: int):
        from ..archs import AttnLabConfig

        try:
            return AttnLabConfig(**self.hf_kwargs(data_vocab_size))
        except (ValueError, TypeError) as err:
            raise ValueError(f"model: {err}") from None


@dataclass
class OptimSection:
    """AdamW with linear warmup, then cosine to min_lr_ratio·lr, WSD (stable, then linear decay over
    the last decay_fraction of steps), or constant."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping

    def __post_init__(self) -> None:
        check_positive(self.lr, "optim.lr")
        check_positive(self.eps, "optim.eps")
        for name in ("weight_decay", "warmup_steps", "grad_clip"):
            check_positive(getattr(self, name), f"optim.{name}", allow_zero=True)
        for name in ("beta1", "beta2", "min_lr_ratio"):
            check_fraction(getattr(self, name), f"optim.{name}", "[0, 1)")
        check_choice(self.schedule, SCHEDULES, "optim.schedule")
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"optim.decay_fraction = {self.decay_fraction!r}: must be in (0, 1]")


@dataclass
class TrainerSection:
    max_steps: int = 1000  # optimizer steps
    accumulate_grad_batches: int = 1
    precision: str = "32-true"
    val_every: int = 200  # steps between validations
    log_every: int = 10  # steps between metrics.jsonl rows
    checkpoint_every: int = 100  # steps between periodic checkpoints (last.ckpt is always kept)
    keep_checkpoints: int = 2  # periodic checkpoints kept besides last.ckpt
    accelerator: str = "auto"  # passed to lightning.Trainer
    devices: int | str = "auto"
    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed … (Lightning's registry)
    num_nodes: int = 1
    compile: bool = False  # torch.compile the model (inductor cache kept in the run dir)
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    progress_bar: bool = True

    def __post_init__(self) -> None:
        for name in (
            "max_steps",
            "accumulate_grad_batches",
            "val_every",
            "log_every",
            "checkpoint_every",
            "num_nodes",
        ):
            check_positive_int(getattr(self, name), f"trainer.{name}")
        check_positive(self.keep_checkpoints, "trainer.keep_checkpoints", allow_zero=True)
        check_choice(self.precision, PRECISIONS, "trainer.precision")
        if self.strategy != "auto":  # the registry imports Lightning: only when it is asked about
            check_choice(self.strategy, lightning_strategies(), "trainer.strategy")
        if self.threads is not None:
            check_positive(self.threads, "trainer.threads")


@dataclass
class EvalSection:
    """The eval suite (evals/, `attnlab eval`) as part of validation: off unless `suite` is set. Runs
    at every `every`-th validation and at the final one; logs eval/<task>/len<L>/hops<h> and
    eval/mean to metrics.jsonl and result.json. Fields as `attnlab eval`'s flags; for a run on
    MQAR, the task's power_a / random_non_queries / separator are the mqar defaults."""

    suite: str | None = None  # multihop | ruler | copy | mqar | text
    tasks: list[str] | None = None  # None: the suite's tasks
    lengths: list[int] = field(default_factory=lambda: [256, 512, 1024])
    hops: list[int] = field(default_factory=lambda: [1, 2, 4])
    samples: int = 16  # per (task, length, hops) cell
    seed: int = 1234
    batch_size: int = 8
    options: dict = field(default_factory=dict)  # {task: {option: value}}
    every: int = 1  # validations between suite runs

    def __post_init__(self) -> None:
        check_positive(self.every, "eval.every")
        if self.suite is not None:
            try:
                self.spec()
            except ValueError as err:
                raise ValueError(f"eval: {err}") from None

    def spec(self, mqar_defaults: dict | None = None):
        """-> SuiteSpec; `mqar_defaults` (the training task's generator options) under `options`."""
        from ..evals import SuiteSpec

        options = dict(self.options)
        if mqar_defaults:
            options["mqar"] = {**mqar_defaults, **options.get("mqar", {})}
        fields = {k: getattr(self, k) for k in ("suite", "lengths", "hops", "samples", "seed", "batch_size")}
        return SuiteSpec(**fields, tasks=self.tasks, options=options)


@dataclass
class QuantSection(QuantScheme):
    """INT4 weight-only quantization (W4A16, docs/quantization.md), off unless the section is given.
    With `qat` (the default here) the trainer swaps the selected nn.Linear modules for torchao's
    fake-quantized ones, fake quant off before optimizer step `start_step` and on from it; the
    exported model (hf/) is a plain attnlab model again, its scheme in config.attnlab_quant, for
    `attnlab quantize --method qat-convert`. Fields and defaults: attnlab.quant.QuantScheme."""

    qat: bool = True

    def __post_init__(self) -> None:
        self.check(quant_field)


def check_quant_fits(cfg: TrainConfig) -> None:
    """The `quant:` section against the rest of the run, before anything is trained: fake quant must
    switch on before the last step, and the selection must fit the model (checked on a model built on
    the meta device, which holds no memory)."""
    q, max_steps = cfg.quant, cfg.trainer.max_steps
    if q.qat and q.start_step >= max_steps:
        raise ValueError(
            f"quant.start_step = {q.start_step}: must be < trainer.max_steps = {max_steps} "
            f"(fake quant would never switch on)"
        )
    import torch

    from ..archs import AttnLabForCausalLM
    from ..quant import select_linears

    with torch.device("meta"):
        model = AttnLabForCausalLM(cfg.model.hf_config(cfg.model.vocab_size or 256))
    select_linears(model, q, quant_field)


def lightning_strategies() -> tuple[str, ...]:
    from lightning.pytorch.strategies import StrategyRegistry

    return ("auto", *sorted(StrategyRegistry.available_strategies()))


@dataclass
class TrainConfig:
    """One run: every section, the seed, and the kernel choice (README "The kernels a run uses")."""

    run_dir: str = "runs/train"
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    eval: EvalSection = field(default_factory=EvalSection)
    # op -> backend pins, and `default: builtin | ranked` for the other ops; empty: every op's
    # built-in default. Also "default=ranked,swa_prefill=torch" (one CLI word).
    kernels: dict[str, str] | str = field(default_factory=dict)
    quant: QuantSection | None = None  # INT4 quantization (QAT); None: none, the run as without it

    def __post_init__(self) -> None:
        self.kernels = canonical_kernels(self.kernels)
        if self.quant is not None:
            check_quant_fits(self)

    def kernel_choice(self):
        """-> attnlab.kernels.KernelChoice that `train()` applies for the whole run."""
        from ..kernels import parse_kernel_choice

        return parse_kernel_choice(self.kernels, "kernels")

    def to_dict(self) -> dict:
        """Every field; `quant` only when set, so a run without it writes (and hashes) as before."""
        values = dataclasses.asdict(self)
        if self.quant is None:
            del values["quant"]
        return values


def canonical_kernels(value: dict | str | None) -> dict[str, str]:
    """The `kernels:` section checked (a bad op or backend names `kernels.<op>`) and written one way:
    a mapping, `default` only when it is `ranked`. So config.yaml and the config hash of a run do
    not depend on how the choice was spelled, and a run without a choice hashes as before the
    section existed."""
    if not value:
        return {}  # the built-in defaults; nothing to check, and the kernels package stays unloaded
    from ..kernels import parse_kernel_choice

    choice = parse_kernel_choice(value, "kernels").to_json()
    return {k: v for k, v in choice.items() if (k, v) != ("default", "builtin")}
