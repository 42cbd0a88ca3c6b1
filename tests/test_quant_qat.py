"""QAT with torchao through the train config's `quant:` section, and `attnlab quantize`.

torchao's fake quant has the gradient of a straight-through estimator cut by the clamp (checked
against a hand mask); a tiny QAT run trains with fake quant off before start_step and on from it;
it exports a plain attnlab model (checkpoint and hf/) with its scheme recorded, which converts in a
process where torchao cannot be imported into an INT4 model whose logits equal the fake-quantized
model's; the section's checks name the field; the CLI quantizes a saved folder (PTQ) and refuses
what it cannot do with exit 2."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import lightning as L
import pytest
import torch
from quant_helpers import CLAMPED, hand_tensor
from torch import nn
from torchao.quantization.qat import IntxFakeQuantizeConfig
from torchao.quantization.qat.fake_quantizer import IntxFakeQuantizer
from train_helpers import tiny_run
from variants import tiny_config

from attnlab import AttnLabForCausalLM
from attnlab.cli import main
from attnlab.evals.tokenizer import byte_tokenizer
from attnlab.quant import (
    QuantScheme,
    fake_quant_enabled,
    int4_modules,
    prepare_qat,
    set_fake_quant,
)
from attnlab.train.config import config_from_dict, dump_config
from attnlab.train.run import train
from attnlab.train.run_files import config_hash

START, STEPS = 8, 24


def test_fake_quant_gradient_is_the_straight_through_estimator_cut_by_the_clamp():
    """d w_fq / d w is 1 where round(w / scale) lies in [-8, 7] and 0 where it was 8 and clamped
    (+7.5 * scale); -7.5 * scale rounds to -8, inside the range, and passes. The scale carries no
    gradient. Gradients are small integers, so every product with the power-of-two scales is exact."""
    w, q, scale = hand_tensor()
    w.requires_grad_(True)
    fq = IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int4, group_size=32, is_symmetric=True))
    g = torch.randint(1, 5, w.shape, generator=torch.Generator().manual_seed(0)).float()
    fq(w).backward(g)
    mask = torch.ones_like(w)
    for row, col in CLAMPED:
        mask[row, col] = 0
    assert torch.equal(w.grad, g * mask)
    # the same through the layer the trainer uses: grad W = mask * (dy^T x)
    model = nn.Sequential(nn.Linear(64, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w)
    assert prepare_qat(model, QuantScheme(modules=["0"], skip=[])) == ["0"]
    x, dy = torch.randn(3, 64), torch.randn(3, 2)
    y = model(x)
    assert torch.equal(y, x @ (q.float() * scale.repeat_interleave(32, 1)).T)
    y.backward(dy)
    torch.testing.assert_close(model[0].weight.grad, mask * (dy.T @ x), rtol=1e-6, atol=1e-6)
    set_fake_quant(model, False)
    assert fake_quant_enabled(model) == {"0": False} and torch.equal(model(x), x @ w.detach().T)


class FakeQuantLog(L.Callback):
    """(global_step, {enabled flags}) at each training batch, and at the final validation."""

    def __init__(self):
        self.train, self.validation, self.modules = [], [], 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        flags = fake_quant_enabled(pl_module.model)
        self.modules = len(flags)
        self.train.append((trainer.global_step, set(flags.values())))

    def on_validation_start(self, trainer, pl_module):
        self.validation.append((trainer.global_step, set(fake_quant_enabled(pl_module.model).values())))


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("qat") / "run"
    log = FakeQuantLog()
    values = tiny_run(run, quant={"start_step": START}, trainer={"max_steps": STEPS, "checkpoint_every": 8})
    result = train(config_from_dict(values), callbacks=[log])
    return run, result, log


def test_a_qat_run_trains_with_fake_quant_from_start_step(qat_run):
    run, result, log = qat_run
    assert result["status"] == "finished" and log.modules == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert log.train == [(step, {step >= START}) for step in range(STEPS)]
    assert log.validation == [(STEPS, {True})]  # the final validation measures the quantized model
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert losses[-1] < losses[0] - 0.3, losses


def test_the_exported_model_and_checkpoint_are_plain_attnlab_with_the_scheme(qat_run):
    run, _, _ = qat_run
    config = json.loads((run / "hf" / "config.json").read_text())
    want = {**QuantScheme().to_dict(), "qat": True, "start_step": START}
    assert config["attnlab_quant"] == want and "quantization_config" not in config
    model = AttnLabForCausalLM.from_pretrained(str(run / "hf"))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is nn.Linear for m in linears)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    plain = AttnLabForCausalLM(model.config)
    plain.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(plain.state_dict()[name], tensor), name


def test_qat_convert_without_torchao_gives_the_fake_quantized_logits(qat_run, tmp_path):
    run, _, _ = qat_run
    out = tmp_path / "int4"
    code = "import sys; sys.modules['torchao'] = None; from attnlab.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "quantize", str(run), "--method", "qat-convert", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "14 Linear modules to INT4, group size 32 (qat-convert)" in done.stdout
    int4 = AttnLabForCausalLM.from_pretrained(str(out))
    assert len(int4_modules(int4)) == 14
    plain = AttnLabForCausalLM.from_pretrained(str(run / "hf")).eval()
    fake = copy.deepcopy(plain)
    prepare_qat(fake, QuantScheme.from_dict(plain.config.attnlab_quant, "attnlab_quant"))
    x = torch.randint(0, 32, (4, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got, unquantized = fake(x).logits, int4(x).logits, plain(x).logits
    assert (got - want).abs().max().item() <= 1e-5  # fp32: the int4 op's summation order only
    assert (unquantized - want).abs().max().item() > 1e-3  # the comparison is not vacuous


@pytest.mark.parametrize(
    "quant, message",
    [
        ({"weights": "int8"}, "quant.weights = 'int8'; allowed: int4"),
        ({"symmetric": False}, "quant.symmetric = False: only symmetric INT4"),
        (
            {"group_size": 48},
            "quant.group_size = 48 does not divide in_features = 32 of model.layers.0.mixer.q_proj",
        ),
        ({"group_size": 1}, "quant.group_size = 1: must be an integer >= 2"),
        ({"group_size": "x"}, 'Parser key "quant.group_size"'),
        ({"start_step": 20}, "quant.start_step = 20: must be < trainer.max_steps = 20"),
        ({"start_step": -1}, "quant.start_step = -1: must be a non-negative integer"),
        ({"modules": ["expert"]}, "quant.modules pattern 'expert' matches no nn.Linear"),
        ({"skip": ["mixer", "ffn"]}, "quant.skip ['mixer', 'ffn'] excludes every module"),
        ({"modules": ["lm_head"], "skip": []}, None),  # allowed: lm_head is not tied here
        ({"bogus": 1}, "Parser key \"quant\": Option 'bogus' is not accepted"),
    ],
)
def test_the_quant_section_checks_name_the_field(tmp_path, quant, message):
    values = tiny_run(tmp_path, quant=quant)
    if message is None:
        assert config_from_dict(values).quant.modules == ["lm_head"]
        return
    with pytest.raises(ValueError) as err:
        config_from_dict(values)
    assert message in str(err.value)


def test_a_config_without_the_section_writes_and_hashes_as_before(tmp_path):
    plain = config_from_dict(tiny_run(tmp_path))
    assert plain.quant is None and "quant" not in plain.to_dict() and "quant" not in dump_config(plain)
    quantized = config_from_dict(tiny_run(tmp_path, quant={}))
    assert quantized.quant.qat is True and config_hash(quantized) != config_hash(plain)
    tied = tiny_run(tmp_path, quant={"modules": ["lm_head"], "skip": []})
    tied["model"]["extra"]["tie_word_embeddings"] = True
    with pytest.raises(ValueError, match=r"lm_head shares its weight .* add lm_head to quant.skip"):
        config_from_dict(tied)


def test_quantize_cli_ptq_writes_a_loadable_folder_and_refuses_bad_input(tmp_path, capsys):
    torch.manual_seed(0)
    source = tmp_path / "model"
    AttnLabForCausalLM(tiny_config("full", vocab_size=256)).save_pretrained(source)
    byte_tokenizer().save_pretrained(source)
    out = tmp_path / "int4"
    assert main(["quantize", str(source), "--method", "ptq", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # fp32 weights: 4 bytes each; INT4: 0.5 + a 4-byte scale per 32, + 16 bytes of shape per module
    params = 2 * (32 * 32 + 16 * 32 * 2 + 32 * 32 + 3 * 64 * 32)  # q, k, v, o, gate, up, down; 2 layers
    before, after = 4 * params, params // 2 + params // 32 * 4 + 16 * 14
    assert f"{before} -> {after} bytes" in printed and f"({before / after:.2f}x smaller" in printed
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    loaded = AttnLabForCausalLM.from_pretrained(str(out))
    assert len(int4_modules(loaded)) == 14
    refusals = [
        (["--method", "qat-convert"], "--method qat-convert needs a model trained with QAT"),
        (["--method", "ptq", "--group-size", "48"], "--group-size = 48 does not divide in_features = 32"),
        (["--method", "ptq", "--modules", "nothing"], "--modules pattern 'nothing' matches no nn.Linear"),
        (
            ["--method", "qat-convert", "--group-size", "64"],
            "--group-size cannot be combined with --method qat-convert",
        ),
    ]
    for flags, message in refusals:
        assert main(["quantize", str(source), *flags, "--out", str(tmp_path / "refused")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "refused").exists()
    assert main(["quantize", str(out), "--method", "ptq", "--out", str(tmp_path / "again")]) == 2
    assert "already an INT4" in capsys.readouterr().err
    assert main(["quantize", str(source), "--method", "ptq", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
