"""The eval suite as part of training (config `eval:`): scores logged at the scheduled validations
and in result.json, MQAR samples made the way the training data was, the same numbers as
`attnlab eval` on the exported model, and config errors that name the field."""

from __future__ import annotations

import json

import pytest
from train_helpers import TINY_TASK, tiny_run

from attnlab.evals import SuiteSpec, run_eval
from attnlab.train.config import config_from_dict
from attnlab.train.run import eval_spec, read_result, train

SUITE = {"suite": "mqar", "lengths": [32, 48], "hops": [1], "samples": 8, "seed": 5}
CELL = "eval/mqar/len32/hops1"


def test_suite_runs_at_scheduled_validations_and_matches_attnlab_eval(tmp_path):
    task = {**TINY_TASK, "separator": True, "random_non_queries": True}
    cfg = config_from_dict(
        tiny_run(
            tmp_path / "run",
            data={"source": "task", "batch_size": 16, "task": task},
            trainer={"max_steps": 20, "val_every": 5, "log_every": 5, "checkpoint_every": 10,
                     "progress_bar": False, "threads": 1},
            eval={**SUITE, "every": 2},
        )
    )  # fmt: skip
    result = train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows if CELL in r] == [10, 20]  # every 2nd of the 4 validations
    assert [r["step"] for r in rows if "val/acc" in r] == [5, 10, 15, 20]
    assert read_result(tmp_path / "run") == result
    assert 0.0 <= result[CELL] <= 1.0 and "eval/mean" in result and "eval/mqar/len48/hops1" in result

    # `attnlab eval` on the exported model (it reads the run's config.yaml, so separator samples too)
    # scores the same final weights on the same cells.
    report = run_eval([tmp_path / "run"], SuiteSpec(**SUITE), tmp_path / "eval", device="cpu", progress=False)
    cells = {f"eval/mqar/len{c['length']}/hops1": c["score"] for c in report["models"][0]["cells"]}
    assert report["models"][0]["mqar_options"]["separator"] is True
    assert cells == {k: pytest.approx(v) for k, v in result.items() if k.startswith("eval/mqar/")}


def test_mqar_options_default_to_the_training_task_and_explicit_ones_win(tmp_path):
    task = {**TINY_TASK, "separator": True, "power_a": 0.05}
    cfg = config_from_dict(tiny_run(tmp_path, data={"task": task}, eval=SUITE))
    assert eval_spec(cfg).options["mqar"] == {"power_a": 0.05, "random_non_queries": False, "separator": True}
    cfg = config_from_dict(
        tiny_run(tmp_path, data={"task": task}, eval={**SUITE, "options": {"mqar": {"separator": False}}})
    )
    assert eval_spec(cfg).options["mqar"]["separator"] is False
    assert eval_spec(config_from_dict(tiny_run(tmp_path))) is None  # no `eval:` section: off


@pytest.mark.parametrize(
    "section, message",
    [
        ({"suite": "nope"}, "eval: suite 'nope' is unknown; allowed: multihop"),
        ({"suite": "mqar", "lengths": [0]}, r"eval: suite lengths = \(0,\)"),
        (
            {"suite": "mqar", "options": {"mqar": {"sep": True}}},
            r"eval: suite options\['mqar'\]: unknown \['sep'\]",
        ),
        ({"suite": "mqar", "every": 0}, "eval.every = 0: must be a positive number"),
    ],
)
def test_bad_eval_section_names_the_field(tmp_path, section, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(tiny_run(tmp_path, eval=section))


def test_eval_section_changes_the_run_hash_only_when_on(tmp_path):
    """Runs finished before `eval:` existed keep their hash (sweeps skip them): with the suite off
    the hash is that of the config without the section; turning the suite on is a different run
    (its result.json gains the eval scores)."""
    import hashlib

    from attnlab.train.run import EXECUTION_ONLY, config_hash

    off = config_from_dict(tiny_run(tmp_path, eval={"suite": None, "samples": 3}))
    before = off.to_dict()
    del before["eval"]
    del before["kernels"]  # no kernel choice: also hashed as before that section existed
    before["trainer"] = {k: v for k, v in before["trainer"].items() if k not in EXECUTION_ONLY}
    assert config_hash(off) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert config_hash(config_from_dict(tiny_run(tmp_path, eval=SUITE))) != config_hash(off)
