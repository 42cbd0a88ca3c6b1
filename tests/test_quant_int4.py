"""INT4 weight-only quantization (attnlab.quant): the numbers against a hand computation and against
torchao's fake quant, the int32 words against compressed-tensors' packer, Int4Linear against
x @ dequantized.T on the kernel path and the fallback, and INT4 model folders against the
compressed-tensors library as an independent reader: its pydantic model accepts the
quantization_config, its decompressor gives exactly our dequantized weights, and a plain float
model built from its weights generates the same tokens as the INT4 model (generate() and the
serving engine) for full, lightning, MLA and MoE models."""

from __future__ import annotations

import copy
import json
import struct

import pytest
import torch
from compressed_tensors import QuantizationConfig
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
from quant_helpers import hand_tensor
from safetensors.torch import load_file
from torch import nn
from torchao.quantization.qat import IntxFakeQuantizeConfig
from torchao.quantization.qat.fake_quantizer import IntxFakeQuantizer
from transformers import AutoModelForCausalLM
from variants import tiny_config

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.quant import (
    Int4Linear,
    QuantScheme,
    dequantize_int4,
    int4_modules,
    pack_int4_rows,
    quantize_int4,
    quantize_model,
    save_int4,
    unpack_int4_rows,
    weight_bytes,
)
from attnlab.serve import LLM, SamplingParams


def torchao_fake_quant(group_size: int = 32) -> IntxFakeQuantizer:
    return IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int4, group_size=group_size, is_symmetric=True))


def test_quantize_int4_and_torchao_fake_quant_equal_a_hand_computation():
    w, q_hand, scale_hand = hand_tensor()
    q, scale = quantize_int4(w, 32)
    assert torch.equal(q, q_hand) and torch.equal(scale, scale_hand)
    w_hand = q_hand.float() * scale_hand.repeat_interleave(32, dim=1)
    assert w_hand[0, 0] == 7.0 and w_hand[1, 0] == 14.0 and w_hand[1, 32] == 3.5  # the clamp shows
    assert torch.equal(dequantize_int4(q, scale, 32), w_hand)
    fq = torchao_fake_quant()
    assert torch.equal(fq(w), w_hand)
    assert torch.equal(fq.scale, scale_hand)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_quantize_int4_equals_torchao_fake_quant_on_random_weights(dtype, group_size):
    gen = torch.Generator().manual_seed(group_size)
    w = (torch.randn(48, 256, generator=gen) * torch.rand(48, 1, generator=gen)).to(dtype)
    w[3, :group_size] = 0  # an all-zero group
    fq = torchao_fake_quant(group_size)
    want = fq(w)
    q, scale = quantize_int4(w, group_size)
    assert q.dtype == torch.int8 and int(q.min()) >= -8 and int(q.max()) <= 7
    assert torch.equal(scale, fq.scale)
    assert torch.equal(dequantize_int4(q, scale, group_size, dtype), want)


@pytest.mark.parametrize("in_features", [64, 44])  # 44: a row that is not whole int32 words
def test_int32_words_equal_compressed_tensors_pack_to_int32(in_features):
    q = torch.randint(-8, 8, (16, in_features), dtype=torch.int8, generator=torch.Generator().manual_seed(3))
    packed = pack_int4_rows(q)
    assert packed.dtype == torch.int32 and packed.shape == (16, -(-in_features // 8))
    assert torch.equal(packed, pack_to_int32(q, 4))
    assert torch.equal(unpack_from_int32(packed, 4, torch.Size([16, in_features])), q)
    assert torch.equal(unpack_int4_rows(packed, in_features), q)
    # by hand: element i at bits 4i of the first word, offset by +8
    word = pack_int4_rows(torch.tensor([[-8, -7, 0, 1, 2, 3, 4, 7]], dtype=torch.int8))[0, 0].item()
    assert struct.pack("<i", word) == bytes([0x10, 0x98, 0xBA, 0xFC])


# (in, out, group, kernel): the CPU op takes N % 16 == 0 and groups 32..256; else the fallback
SHAPES = [(64, 32, 32, "cpu"), (96, 48, 32, "cpu"), (64, 24, 32, None), (64, 32, 16, None)]


@pytest.mark.parametrize("k, n, group_size, kernel", SHAPES)
@pytest.mark.parametrize("lead", [(5,), (2, 3), (2, 1, 4), (0,)])
def test_int4_linear_equals_x_times_dequantized_weight(k, n, group_size, kernel, lead):
    torch.manual_seed(k + n + group_size)
    linear = nn.Linear(k, n, bias=True)
    layer = Int4Linear.from_linear(linear, group_size)
    assert layer.kernel == kernel
    q, scale = quantize_int4(linear.weight, group_size)
    w = dequantize_int4(q, scale, group_size)  # [N, K]
    x = torch.randn(*lead, k)
    want = x @ w.T + linear.bias.detach()
    got = layer(x)
    assert got.shape == (*lead, n) and got.dtype == torch.float32
    if x.numel():
        assert (got - want).abs().max().item() <= 1e-5  # fp32: the summation order only
    # bf16: module and x in bf16; the reference in fp32 from the same bf16 numbers
    linear16 = copy.deepcopy(linear).to(torch.bfloat16)
    layer16 = Int4Linear.from_linear(linear16, group_size)
    assert layer16.kernel == kernel
    q16, s16 = quantize_int4(linear16.weight, group_size)
    w16 = dequantize_int4(q16, s16, group_size).float()
    x16 = x.to(torch.bfloat16)
    want16 = x16.float() @ w16.T + linear16.bias.detach().float()
    got16 = layer16(x16)
    assert got16.shape == (*lead, n) and got16.dtype == torch.bfloat16
    if x.numel():  # bf16 output rounding (2^-9 relative) plus bf16 arithmetic inside the op
        assert (got16.float() - want16).abs().max().item() <= 1e-2 * want16.abs().max().item()


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
    reason="torch's CUDA INT4 matmul needs a GPU of compute capability 8.0+",
)
@pytest.mark.parametrize("k, n", [(64, 32), (256, 96)])
def test_int4_linear_on_cuda_runs_the_packed_kernel_and_equals_the_dequantized_matmul(k, n):
    """W4A16 on GPU: moving an Int4Linear to CUDA in bf16 repacks q for torch's tinygemm op; its
    output equals x @ (q x scale)^T within bf16 rounding, and moving back to CPU gives q back."""
    torch.manual_seed(k + n)
    linear = nn.Linear(k, n, bias=True).to(torch.bfloat16)
    layer = Int4Linear.from_linear(linear, 32)
    q = layer.int_weight().clone()
    gpu = copy.deepcopy(layer).cuda()
    assert gpu.kernel == "cuda" and gpu.packed.device.type == "cuda"
    x = torch.randn(7, k, dtype=torch.bfloat16, device="cuda")
    want = x.float() @ gpu.weight.float().T + linear.bias.detach().float().cuda()
    got = gpu(x)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max().item() <= 1e-2 * want.abs().max().item()
    assert torch.equal(gpu.cpu().int_weight(), q)


def test_int4_linear_state_dict_is_the_pack_quantized_layout_and_survives_moves():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32, bias=False)
    layer = Int4Linear.from_linear(linear, 32)
    q, scale = quantize_int4(linear.weight, 32)
    state = layer.state_dict()
    assert {k: (tuple(v.shape), v.dtype) for k, v in state.items()} == {
        "weight_packed": ((32, 8), torch.int32),
        "weight_scale": ((32, 2), torch.float32),
        "weight_shape": ((2,), torch.int64),
    }
    assert torch.equal(state["weight_packed"], pack_to_int32(q, 4)) and state["weight_shape"].tolist() == [
        32,
        64,
    ]
    assert layer.packed_bytes() == 32 * 64 // 2 + 32 * 2 * 4 + 16
    fresh = Int4Linear(64, 32, 32)
    assert not torch.equal(fresh.int_weight(), q)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.int_weight(), q) and torch.equal(fresh.weight_scale(), scale)
    fresh.to(torch.float64)  # no float64 op: re-packed for the fallback, the same integers
    assert fresh.kernel is None and torch.equal(fresh.int_weight(), q)
    fresh.to(torch.float32)
    assert fresh.kernel == "cpu" and torch.equal(fresh.int_weight(), q)
    with pytest.raises(RuntimeError, match="weight_shape"):
        Int4Linear(64, 48, 32).load_state_dict(state)


# --- model folders ------------------------------------------------------------------------------
MODELS = {
    "full": dict(name="full"),
    "lightning": dict(name="lightning"),
    "mla": dict(name="mla"),
    "moe": dict(name="full", ffn="moe", num_experts=4, num_experts_per_tok=2),
}


def build(key: str, dtype=torch.float32) -> AttnLabForCausalLM:
    torch.manual_seed(0)
    spec = dict(MODELS[key])
    # initializer_range 0.2: logits far apart, so greedy choices do not hang on rounding
    return AttnLabForCausalLM(tiny_config(spec.pop("name"), initializer_range=0.2, **spec)).to(dtype).eval()


def reference_from_library(folder) -> AttnLabForCausalLM:
    """A plain float model whose quantized Linear weights are what compressed-tensors' decompressor
    reads from the folder: the INT4 model's independent reference."""
    config = json.loads((folder / "config.json").read_text())
    scheme = QuantizationConfig.model_validate(config["quantization_config"]).config_groups["group_0"]
    tensors = load_file(str(folder / "model.safetensors"))
    plain, names = {}, {k.rsplit(".", 1)[0] for k in tensors if k.endswith(".weight_packed")}
    for key, value in tensors.items():
        module, _, leaf = key.rpartition(".")
        if module not in names:
            plain[key] = value
    for name in names:
        local = {
            leaf: tensors[f"{name}.{leaf}"] for leaf in ("weight_packed", "weight_scale", "weight_shape")
        }
        plain[f"{name}.weight"] = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
    fields = {k: v for k, v in config.items() if k not in ("quantization_config", "attnlab_quant")}
    model = AttnLabForCausalLM(AttnLabConfig.from_dict(fields)).eval()
    model.load_state_dict(plain, strict=True)
    return model


@pytest.fixture(scope="module")
def int4_folders(tmp_path_factory):
    """key -> (float model, INT4 folder) for each model family, fp32."""
    out = {}
    for key in MODELS:
        model = build(key)
        folder = tmp_path_factory.mktemp(key) / "int4"
        save_int4(quantize_model(build(key), QuantScheme()), None, folder)
        out[key] = (model, folder)
    return out


@pytest.mark.parametrize("key", list(MODELS))
def test_folder_round_trips_and_the_library_reads_it(int4_folders, key):
    float_model, folder = int4_folders[key]
    quantized = quantize_model(build(key), QuantScheme())
    for loader in (AutoModelForCausalLM, AttnLabForCausalLM):
        loaded = loader.from_pretrained(str(folder))
        assert isinstance(loaded, AttnLabForCausalLM)
        assert set(int4_modules(loaded)) == set(int4_modules(quantized))
        x = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert torch.equal(loaded(x).logits, quantized(x).logits)  # same integers, same kernel
    config = json.loads((folder / "config.json").read_text())
    parsed = QuantizationConfig.model_validate(config["quantization_config"])
    assert parsed.format == "pack-quantized" and parsed.config_groups["group_0"].weights.group_size == 32
    linears = [n for n, m in float_model.named_modules() if isinstance(m, nn.Linear)]
    routers = [n for n in linears if n.endswith("router")]
    assert parsed.ignore == [*routers, "lm_head"] and (key != "moe" or routers)
    assert config["attnlab_quant"] == QuantScheme().to_dict()
    reference = reference_from_library(folder)
    for name, module in int4_modules(loaded).items():
        assert torch.equal(reference.get_submodule(name).weight, module.weight), name
    assert weight_bytes(loaded) == sum(
        t.numel() * t.element_size() for t in load_file(str(folder / "model.safetensors")).values()
    )


def header(path) -> dict:
    raw = path.read_bytes()
    return json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])


def test_quantized_modules_take_3_48x_fewer_bytes_than_bf16(tmp_path):
    """bf16 weights: 2 bytes each; INT4: 0.5 + one bf16 scale per 32 (0.0625) = 0.5625, i.e. 3.556x,
    less a 16-byte weight_shape per module: 3.48x for this model's 14 modules (hand count below)."""
    bf16 = build("full", torch.bfloat16)
    bf16.save_pretrained(tmp_path / "bf16")
    save_int4(quantize_model(build("full", torch.bfloat16), QuantScheme()), None, tmp_path / "int4")
    dense, packed = (
        header(tmp_path / "bf16" / "model.safetensors"),
        header(tmp_path / "int4" / "model.safetensors"),
    )

    def size(entry):
        return entry["data_offsets"][1] - entry["data_offsets"][0]

    names = list(int4_modules(AttnLabForCausalLM.from_pretrained(str(tmp_path / "int4"))))
    before = sum(size(dense[f"{n}.weight"]) for n in names)
    after = sum(
        size(packed[f"{n}.{leaf}"])
        for n in names
        for leaf in ("weight_packed", "weight_scale", "weight_shape")
    )
    params = 2 * (32 * 32 + 16 * 32 * 2 + 32 * 32 + 3 * 64 * 32)  # q, k, v, o, gate, up, down; 2 layers
    assert len(names) == 14 and before == 2 * params
    assert after == params // 2 + (params // 32) * 2 + 16 * len(names)
    assert after == 10592 and 3.47 < before / after < 3.49
    assert packed["model.layers.0.mixer.q_proj.weight_scale"]["dtype"] == "BF16"
    assert packed["lm_head.weight"]["dtype"] == "BF16"  # skipped: left as it was


@pytest.mark.parametrize("key", list(MODELS))
def test_int4_generation_equals_the_dequantized_models(int4_folders, key):
    _, folder = int4_folders[key]
    int4 = AutoModelForCausalLM.from_pretrained(str(folder))
    reference = reference_from_library(folder)
    prompt = torch.randint(0, 64, (1, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = reference.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None)[
            0, 7:
        ].tolist()
        got = int4.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None)[0, 7:].tolist()
    assert got == want and len(set(want)) > 1
    llm = LLM(folder, device="cpu", cache_memory="16MiB")
    assert int4_modules(int4) and set(int4_modules(llm.engine.model)) == set(int4_modules(int4))
    served = llm.generate(
        [prompt[0].tolist()], SamplingParams(max_tokens=12, ignore_eos=True), use_tqdm=False
    )[0]
    assert served.token_ids == want


def test_tied_embeddings_biases_and_foreign_schemes(tmp_path):
    torch.manual_seed(0)
    config = tiny_config("full", tie_word_embeddings=True, mixers={"F": {"type": "full", "bias": True}})
    model = AttnLabForCausalLM(config).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.normal_()
    quantize_model(model, QuantScheme())
    save_int4(model, None, tmp_path / "int4")
    assert "lm_head.weight" not in load_file(str(tmp_path / "int4" / "model.safetensors"))  # tied: once
    loaded = AttnLabForCausalLM.from_pretrained(str(tmp_path / "int4"))
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    q_proj = loaded.model.layers[0].mixer.q_proj
    assert isinstance(q_proj, Int4Linear) and torch.equal(
        q_proj.bias, model.model.layers[0].mixer.q_proj.bias
    )
    x = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    config_file = tmp_path / "int4" / "config.json"
    values = json.loads(config_file.read_text())
    values["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 8
    config_file.write_text(json.dumps(values))
    with pytest.raises(ValueError, match=r"group_0\.weights\.num_bits = 8; attnlab reads 4-bit"):
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "int4"))
