"""Reading and writing run configs: one path for YAML files, CLI overrides (`--optim.lr 1e-3`,
`--kernels.swa_prefill torch`) and the sweeps' generated dicts, so each is checked the same way.

jsonargparse checks the types against the dataclasses in sections.py; their `__post_init__` checks
the values. Every error comes out as one ValueError that names the field.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .sections import TrainConfig


def config_parser(prog: str = "attnlab train"):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, exit_on_error=False, description="Train one attnlab model.")
    parser.add_argument("--config", action=ActionConfigFile, help="YAML run config (configs/train/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from <run_dir>/checkpoints/last.ckpt")
    parser.add_class_arguments(TrainConfig, nested_key=None, fail_untyped=False)
    return parser


def parse_args(argv: list[str]) -> tuple[TrainConfig, bool]:
    """CLI words -> (config, resume). Raises ValueError naming the field on any bad value."""
    from jsonargparse import ArgumentError

    parser = config_parser()
    argv = list(argv)
    for i, word in enumerate(argv[:-1]):
        if word == "--config":  # also accept paths relative to the installed attnlab/configs
            from .sweep import find_config

            argv[i + 1] = str(find_config(argv[i + 1]))
            check_yaml_file(Path(argv[i + 1]))
    try:
        ns = parser.parse_args(argv)
    except ArgumentError as err:
        raise ValueError(optional_section_error(str(err))) from None
    resume = bool(ns.pop("resume"))
    ns.pop("config", None)
    return build_config(parser, ns), resume


def check_yaml_file(path: Path):
    """The file's YAML content; one that does not parse: one line naming the file, the problem and where."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(
            f"{path}: not valid YAML ({err.problem or err.context}{where}); is it cut short?"
        ) from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read ({err})") from None


def config_from_dict(values: dict) -> TrainConfig:
    from jsonargparse import ArgumentError

    parser = config_parser()
    try:
        ns = parser.parse_object(values)
    except ArgumentError as err:
        raise ValueError(optional_section_error(str(err))) from None
    ns.pop("resume", None)
    ns.pop("config", None)
    return build_config(parser, ns)


def build_config(parser, ns) -> TrainConfig:
    try:
        init = parser.instantiate(ns)
    except ValueError as err:
        raise ValueError(optional_section_error(str(err))) from None
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(init).items() if k in fields})


def optional_section_error(message: str) -> str:
    """An error inside an optional section (`quant:`, typed `Section | None`) comes from jsonargparse
    wrapped in the list of Union members it tried; keep the section's own error, with the section
    in the field name (`Parser key "quant.group_size": Expected a <class 'int'>`). Others pass as-is."""
    found = re.search(r"Errors:\n(.*?)\n\s*- Expected a <class 'NoneType'>", message, re.S)
    if not found:
        return message
    lines = [line.strip() for line in found[1].strip().removeprefix("- ").splitlines()]
    lines = [line for line in lines if not line.startswith("Problem with given class_path")]
    text = " ".join(lines)
    section = re.match(r'Parser key "([\w.]+)"', message)
    if section and "Parser key" in text:
        text = re.sub(r'Parser key "([\w.]+)"', lambda m: f'Parser key "{section[1]}.{m[1]}"', text)
    elif section:
        text = f'Parser key "{section[1]}": {text}'
    return text


def load_config(path: str) -> TrainConfig:
    import yaml

    with open(path) as f:
        return config_from_dict(yaml.safe_load(f) or {})


def dump_config(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
