"""The kernel choice is part of a run: result.json records which backend ran each op, a `kernels:`
pin changes it, a bad pin is a config error naming the field, and a run with no pin trains the
same whatever this machine's ranking cache holds (README "The kernels a run uses")."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from train_helpers import tiny_run

from attnlab.kernels import dispatch
from attnlab.train.config import config_from_dict, parse_args
from attnlab.train.run import read_result, train

LAYOUTS = {
    "softmax": ({"layers": "F"}, "swa_prefill"),
    "lightning": (
        {"layers": "L", "mixers": {"L": {"type": "lightning", "block_size": 16}}},
        "lightning_prefill",
    ),
}
# Two machines' benchmark histories that disagree on every op the layouts use.
RANKINGS = {
    "a": {"swa_prefill": ["torch"], "lightning_prefill": ["torch"]},
    "b": {"swa_prefill": ["torch_chunk"], "lightning_prefill": ["torch_chunk"]},
}


def short_run(run_dir, layout: str = "softmax", **sections) -> dict:
    model, _ = LAYOUTS[layout]
    trainer = {"max_steps": 6, "checkpoint_every": 6, "val_every": 6}
    return tiny_run(run_dir, model=model, trainer=trainer, **sections)


def use_ranking_cache(path, rankings: dict, monkeypatch) -> None:
    """Point the process at a ranking cache holding `rankings` (forward and with gradients)."""
    monkeypatch.setenv("ATTNLAB_KERNEL_CACHE", str(path))
    for op, ranking in rankings.items():
        for mode in dispatch.MODES:
            dispatch.write_ranking("cpu", op, mode, ranking, {})
    dispatch.forget()


def losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.fixture(autouse=True)
def _fresh_rankings():
    dispatch.forget()
    yield
    dispatch.forget()  # the next test reads its own cache path, not ours


def test_result_json_records_the_choice_and_the_backends_used(tmp_path):
    result = train(config_from_dict(short_run(tmp_path)))
    assert result["status"] == "finished"
    kernels = read_result(tmp_path)["kernels"]
    assert kernels["choice"] == {"default": "builtin"}
    assert set(kernels["used"]) >= {"swa_prefill"} and all(kernels["used"].values())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_runs_with_different_ranking_caches_train_identically(layout, tmp_path, monkeypatch):
    """No pin: each op's built-in default, never the machine's ranking."""
    results = {}
    for name, rankings in RANKINGS.items():
        use_ranking_cache(tmp_path / f"kernels-{name}.json", rankings, monkeypatch)
        results[name] = train(config_from_dict(short_run(tmp_path / name, layout)))
    a, b = results["a"], results["b"]
    assert a["status"] == b["status"] == "finished"
    assert a["kernels"]["used"] == b["kernels"]["used"]
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # bitwise: the same kernels ran
    assert a["val/loss"] == b["val/loss"]
    weights_a, weights_b = (load_file(tmp_path / n / "hf" / "model.safetensors") for n in "ab")
    assert all(weights_a[k].equal(weights_b[k]) for k in weights_a)


def test_default_ranked_opts_in_to_the_ranking_cache(tmp_path, monkeypatch):
    """The caches above differ in what they would pick: a run that asks for them sees it."""
    _, op = LAYOUTS["lightning"]
    used = {}
    for name, rankings in RANKINGS.items():
        use_ranking_cache(tmp_path / f"kernels-{name}.json", rankings, monkeypatch)
        values = short_run(tmp_path / name, "lightning", kernels={"default": "ranked"})
        result = train(config_from_dict(values))
        assert result["kernels"]["choice"] == {"default": "ranked"}
        used[name] = result["kernels"]["used"][op]
    assert used == {"a": "torch", "b": "torch_chunk"}


def test_a_pin_changes_the_map(tmp_path):
    result = train(config_from_dict(short_run(tmp_path, kernels={"swa_prefill": "torch"})))
    assert result["kernels"]["choice"] == {"default": "builtin", "swa_prefill": "torch"}
    assert result["kernels"]["used"]["swa_prefill"] == "torch"
    assert (tmp_path / "config.yaml").read_text().count("swa_prefill: torch") == 1


def test_a_pin_from_the_command_line(tmp_path):
    cfg, _ = parse_args(["--run_dir", str(tmp_path), "--kernels.swa_prefill", "torch"])
    assert cfg.kernels == {"swa_prefill": "torch"}
    cfg, _ = parse_args(["--run_dir", str(tmp_path), "--kernels", "default=ranked,swa_prefill=torch"])
    assert cfg.kernels == {"default": "ranked", "swa_prefill": "torch"}
    cfg, _ = parse_args(["--run_dir", str(tmp_path), "--kernels.default", "builtin"])
    assert cfg.kernels == {}  # spelled out or left out: one config, one hash


@pytest.mark.parametrize(
    "kernels, message",
    [
        ({"swa_prefil": "torch"}, "kernels.swa_prefil: not an op"),
        ({"swa_prefill": "cuda_magic"}, "kernels.swa_prefill = 'cuda_magic' is not a backend of swa_prefill"),
        ({"default": "fastest"}, "kernels.default = 'fastest'; allowed: builtin, ranked"),
    ],
)
def test_a_bad_pin_is_a_config_error_naming_the_field(kernels, message, tmp_path):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        config_from_dict(short_run(tmp_path, kernels=kernels))
    assert not tmp_path.joinpath("config.yaml").exists()


def test_no_choice_keeps_the_config_hash(tmp_path):
    """Runs finished before `kernels:` existed are still recognised as finished by sweeps."""
    from attnlab.train.run import config_hash

    plain = config_from_dict(short_run(tmp_path))
    spelled = config_from_dict(short_run(tmp_path, kernels={"default": "builtin"}))
    pinned = config_from_dict(short_run(tmp_path, kernels={"swa_prefill": "torch"}))
    assert config_hash(plain) == config_hash(spelled) != config_hash(pinned)


def test_sweeps_and_the_study_pass_the_choice_through(tmp_path):
    """A `kernels:` base section and a grid axis over it reach every run's config; the study's
    variants (a sweep underneath) too."""
    from attnlab.study.config import from_dict
    from attnlab.study.plan import variant_configs
    from attnlab.train.sweep import SweepConfig, expand

    base = {**short_run(tmp_path), "kernels": {"swa_prefill": "torch"}}
    sweep = SweepConfig(out_dir=str(tmp_path), base=base, grid={"kernels.default": ["builtin", "ranked"]})
    kernels = {run.labels["kernels.default"]: run.config.kernels for run in expand(sweep)}
    assert kernels == {
        "builtin": {"swa_prefill": "torch"},
        "ranked": {"default": "ranked", "swa_prefill": "torch"},
    }
    bad = SweepConfig(out_dir=str(tmp_path), base=base, grid={"kernels.swa_prefill": ["torch", "nope"]})
    with pytest.raises(ValueError, match=r"sweep run swa_prefill=nope: kernels.swa_prefill = 'nope'"):
        expand(bad)
    study = from_dict({"base": base, "variants": {"full": {"model.layers": "F"}}, "stages": ["train"]})
    assert variant_configs(study)["full"].kernels == {"swa_prefill": "torch"}
