"""Low-precision lightning state in the engine: fp32 storage is the
exact path, bf16/fp16/int8 storage runs for every lightning-bearing family with hand-computed
slot sizes, its error is small but real, and the state-precision bench's pieces (teacher forcing,
divergence bookkeeping, report) do what they say."""

from __future__ import annotations

import json

import pytest
import torch
from test_serve_engine import build, prompts

from attnlab.archs.state import RecurrentState
from attnlab.serve import LLM, EngineConfig, LLMEngine, SamplingParams
from attnlab.serve.state_precision import (
    FORMATS,
    PrecisionOptions,
    decode_study,
    first_divergence,
    mqar_accuracy,
    summarise,
)
from attnlab.serve.state_precision_report import geometric_bins, markdown, plot, recommend
from attnlab.serve.teacher_forcing import TeacherForcer

# Lightning layers of each tiny family (hidden 32, 4 heads of 8; intra: 2 lightning heads of 8).
LIGHTNING = {
    "lightning": (2, 4),
    "intra-lightning-full": (2, 2),
    "hybrid-3to1": (3, 4),
    "hybrid-7to1": (7, 4),
}
# Bytes of ONE lightning head's [8, 8] state, by hand: 64 values; int8 row: + 8 fp32 scales;
# int8 block: 32 does not divide 8, so one 8x8 tile: + 1 scale.
HEAD_BYTES = {"fp32": 256, "bf16": 128, "fp16": 128, "int8-row": 64 + 32, "int8-block": 64 + 4}


def engine(model, fmt: str, **kw) -> LLMEngine:
    return LLMEngine(model, None, EngineConfig(cache_memory="16MiB", max_model_len=96, **FORMATS[fmt], **kw))


def forced_logits(model, fmt: str, seqs, prefill=4) -> torch.Tensor:
    forcer = TeacherForcer(engine(model, fmt), seqs, prefill)
    rows = []
    while not forcer.done:
        rows.append(forcer.step())
    forcer.close()
    assert forcer.cache.all_free()
    return torch.stack(rows, 1)  # [N, T - prefill + 1, V]


@pytest.mark.parametrize("name", list(LIGHTNING))
def test_fp32_storage_is_the_exact_path(name):
    model = build(name)
    seqs = prompts((40, 40, 40))
    with torch.no_grad():
        dense = model(torch.tensor(seqs), use_cache=False).logits  # [N, T, V]
    got = forced_logits(model, "fp32", seqs)
    assert (got - dense[:, 3:]).abs().max() < 1e-4
    # The slot holds what the dense recurrent state holds after the same tokens, to the bit's order.
    if name == "lightning":
        forcer = TeacherForcer(engine(model, "fp32"), seqs[:1], prefill=40)
        forcer.step()
        cache = model.new_cache(1)
        with torch.no_grad():
            model(torch.tensor(seqs[:1]), cache=cache, use_cache=True)
        assert all(isinstance(s, RecurrentState) for s in cache.states)
        for ours, dense_state in zip(forcer.states(), cache.states, strict=True):
            torch.testing.assert_close(ours, dense_state.state, atol=1e-6, rtol=1e-6)
        forcer.close()


def test_fp32_storage_never_rounds(monkeypatch):
    """fp32 slots are read and written as they are: the store/load ops are not even called, so the
    fp32 engine's outputs are the ones it had before low-precision storage existed."""
    import attnlab.serve.layer_states as layer_states

    def refuse(*args, **kwargs):
        raise AssertionError("fp32 storage must not go through state_store / state_load")

    monkeypatch.setattr(layer_states, "state_store", refuse)
    monkeypatch.setattr(layer_states, "state_load", refuse)
    model = build("hybrid-3to1")
    forced_logits(model, "fp32", prompts((20, 20)))
    with pytest.raises(AssertionError, match="must not go through"):
        forced_logits(model, "bf16", prompts((20, 20)))


@pytest.mark.parametrize("name", list(LIGHTNING))
@pytest.mark.parametrize("fmt", ["bf16", "fp16+sr", "int8-row", "int8-block+sr"])
def test_low_precision_storage_runs_with_hand_sized_slots(name, fmt):
    model = build(name)
    layers, heads = LIGHTNING[name]
    eng = engine(model, fmt)
    base = fmt.removesuffix("+sr")
    assert eng.cache.slot_bytes == layers * heads * HEAD_BYTES[base]
    slots = eng.cache.recurrent_storage()
    assert sum(s.nbytes() for s in slots) == eng.cache.max_seqs * eng.cache.slot_bytes
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(base, torch.int8)
    assert all(s.values.dtype == dtype for s in slots)
    assert all((s.scales is not None) == base.startswith("int8") for s in slots)
    # model.state_bytes follows the storage dtype the same way (by hand, for the lightning part).
    grow = model.state_bytes(
        50, torch.float32, FORMATS[fmt]["state_dtype"], FORMATS[fmt].get("state_scales", "row")
    )
    assert grow - model.state_bytes(50) == layers * heads * (HEAD_BYTES[base] - HEAD_BYTES["fp32"])
    # It serves, and its logits stay close to fp32's without being equal (the storage is used).
    seqs = prompts((40, 40))
    ref, low = forced_logits(model, "fp32", seqs), forced_logits(model, fmt, seqs)
    diff = (low - ref).abs()
    assert diff.max() > 0 and diff.mean() < 0.1 * ref.abs().mean()
    outs = LLM(model, cache_memory="16MiB", max_model_len=96, **FORMATS[fmt]).generate(
        prompts((5, 17, 30)), SamplingParams(max_tokens=6, ignore_eos=True), use_tqdm=False
    )
    assert [len(o.token_ids) for o in outs] == [6, 6, 6]


def test_request_bytes_follow_the_storage_dtype():
    model = build("lightning")
    for fmt in ("fp32", "bf16", "int8-row"):
        forcer = TeacherForcer(engine(model, fmt), prompts((30,)), prefill=10)
        forcer.step()
        assert forcer.cache.request_bytes("forced-0") == 2 * 4 * HEAD_BYTES[fmt]
        forcer.close()


def test_engine_config_names_the_bad_state_field():
    with pytest.raises(ValueError, match="state_rounding = 'up'; allowed: nearest, stochastic"):
        EngineConfig(state_rounding="up")
    with pytest.raises(ValueError, match="state_scales = 'col'; allowed: row, block"):
        EngineConfig(state_dtype="int8", state_scales="col")
    with pytest.raises(ValueError, match="stochastic.*needs state_dtype bf16, fp16 or int8"):
        EngineConfig(state_rounding="stochastic")


def test_teacher_forcer_rejects_what_it_cannot_run():
    model = build("lightning")
    eng = engine(model, "fp32")
    with pytest.raises(ValueError, match="one length"):
        TeacherForcer(eng, [[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="prefill = 5: must be in 1..3"):
        TeacherForcer(eng, [[1, 2, 3]], prefill=5)
    with pytest.raises(ValueError, match="exceed max_model_len"):
        TeacherForcer(eng, [list(range(1, 60)) * 2])


def test_first_divergence_and_window_summaries_by_hand():
    mismatch = [[False, False], [False, True], [True, True], [False, False]]
    assert first_divergence(mismatch) == [3, 2]
    curves = {"bf16": {"state_rel": [1.0, 2.0, 3.0, 4.0], "kl": [0.0, 0.0, 1.0, 3.0],
                       "max_abs": [1.0, 1.0, 1.0, 1.0], "mismatch": mismatch}}  # fmt: skip
    s = summarise(curves, 4)["bf16"]
    assert s["at"]["4"]["kl"] == 2.0 and s["at"]["4"]["state_rel"] == 3.5  # mean over steps 3, 4
    assert s["at"]["4"]["mismatch_rate"] == 0.5 and s["first_divergence"] == [3, 2]


def test_geometric_bins_cover_every_step_once():
    for n in (1, 5, 100, 16385):
        bins = geometric_bins(n)
        assert bins[0][0] == 0 and bins[-1][1] == n
        assert all(a[1] == b[0] and a[1] > a[0] for a, b in zip(bins, bins[1:], strict=False))
    widths = [hi - lo for lo, hi in geometric_bins(16385)]
    assert widths[-1] >= widths[-2] / 2  # no sliver at the end


def test_decode_study_and_report_on_a_tiny_model(tmp_path):
    model = build("hybrid-3to1")
    streams = prompts((70, 70))
    study = decode_study(model, streams, ["bf16", "int8-row+sr"], prefill=6)
    curves = study["curves"]
    assert len(curves["bf16"]["kl"]) == 70 - 6 + 1
    # Errors are real and int8 is coarser than bf16 over the run.
    mean = {f: sum(c["state_rel"]) / len(c["state_rel"]) for f, c in curves.items()}
    assert 0 < mean["bf16"] < mean["int8-row+sr"]
    results = {
        "options": {"formats": ["bf16", "int8-row+sr"], "steps": 64, "sequences": 2, "prefill": 6},
        "decode": {
            "tiny": {
                "layers": "LLLF",
                "summary": summarise(curves, 64),
                "tokens_per_s": study["tokens_per_s"],
                "state_bytes_per_seq": {"fp32": 100, "bf16": 50, "int8-row+sr": 30},
            }
        },  # fmt: skip
        "mqar": {},
    }
    text = markdown(results)
    assert "| bf16 | 50 | 0.50 |" in text and "Recommended storage" in text
    assert recommend(results) in ("fp32", "bf16", "int8-row+sr")
    plot({"tiny": curves}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    json.dumps(results)  # the results are plain JSON


def test_mqar_accuracy_through_the_engine_matches_the_dense_eval(tmp_path):
    from attnlab.evals.runner import run_token_cell
    from attnlab.evals.suite import SuiteSpec

    model = build("hybrid-3to1")
    model.save_pretrained(tmp_path / "m")
    rows = mqar_accuracy(tmp_path / "m", ["bf16"], [64], [1], samples=8, seed=0)
    dense = run_token_cell(model, "mqar", 64, 1, SuiteSpec(samples=8, seed=0, batch_size=8), {})
    assert rows[0]["fp32"] == pytest.approx(dense["score"])  # same cell, same scorer, engine path
    assert 0 <= rows[0]["bf16"] <= 1


def test_bench_options_name_the_bad_field(tmp_path):
    with pytest.raises(ValueError, match="--formats.*allowed: fp32, bf16"):
        PrecisionOptions(formats=["int4"]).check()
    with pytest.raises(ValueError, match="--steps 0: must be positive"):
        PrecisionOptions(steps=0).check()
    with pytest.raises(ValueError, match="does not exist"):
        PrecisionOptions(models=[tmp_path / "nope"]).check()


def test_serve_cli_passes_the_state_options_and_names_a_bad_one(tmp_path, capsys):
    from attnlab.cli import build_parser, main

    args = build_parser().parse_args(
        [
            "serve",
            str(tmp_path),
            "--state-dtype",
            "int8",
            "--state-scales",
            "block",
            "--state-rounding",
            "stochastic",
        ]
    )
    assert (args.state_dtype, args.state_scales, args.state_rounding) == ("int8", "block", "stochastic")
    assert (
        main(["serve", str(tmp_path), "--state-rounding", "stochastic"]) == 2
    )  # fp32: fails before any load
    assert "needs state_dtype bf16, fp16 or int8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", str(tmp_path), "--state-scales", "col"])
    assert "invalid choice: 'col'" in capsys.readouterr().err
