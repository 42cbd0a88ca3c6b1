"""The run configuration: model, data, optimiser, trainer and kernels in one YAML (README "Commands").

    run_dir: runs/mqar
    model: {layers: LF, hidden_size: 64, num_attention_heads: 1}
    data:  {source: task, task: {name: mqar, seq_len: 64, num_kv_pairs: 4, vocab_size: 64}}
    optim: {lr: 3.0e-3, schedule: cosine, warmup_steps: 50}
    trainer: {max_steps: 600, val_every: 100}
    eval: {suite: mqar, lengths: [64, 256], hops: [1, 2], samples: 32}   # optional
    kernels: {swa_prefill: torch}                                        # optional: pins
    quant: {weights: int4, group_size: 32, qat: true, start_step: 100}   # optional: INT4 QAT

This module is the public face; the parts live in
    sections.py       TrainConfig and the model, optim, trainer, eval, quant sections (value checks)
    data_sections.py  the data section: a synthetic task or a text corpus
    config_io.py      the parser (YAML + CLI overrides), config_from_dict, load/dump, check_yaml_file
The field checks themselves are common/validators.py.
"""

from __future__ import annotations

from .config_io import (
    build_config,
    check_yaml_file,
    config_from_dict,
    config_parser,
    dump_config,
    load_config,
    parse_args,
)
from .data_sections import DATA_SOURCES, MIXTURE_FIELDS, DataSection, TaskSection, TextSection
from .sections import (
    PRECISIONS,
    SCHEDULES,
    EvalSection,
    ModelSection,
    OptimSection,
    QuantSection,
    TrainConfig,
    TrainerSection,
    canonical_kernels,
    lightning_strategies,
)

__all__ = [
    "DATA_SOURCES",
    "MIXTURE_FIELDS",
    "PRECISIONS",
    "SCHEDULES",
    "DataSection",
    "EvalSection",
    "ModelSection",
    "OptimSection",
    "QuantSection",
    "TaskSection",
    "TextSection",
    "TrainConfig",
    "TrainerSection",
    "build_config",
    "canonical_kernels",
    "check_yaml_file",
    "config_from_dict",
    "config_parser",
    "dump_config",
    "lightning_strategies",
    "load_config",
    "parse_args",
]
