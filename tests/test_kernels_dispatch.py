"""Dispatch: the built-in order, explicit override, pins, clear errors, the on-disk ranking cache
(followed only with `default: ranked`), and the map of backends used."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.kernels import (
    KernelChoice,
    backends_used,
    dispatch,
    kernel_choice,
    lightning_decode,
    lightning_prefill,
    parse_kernel_choice,
    registry,
    swa_prefill,
)
from attnlab.kernels.registry import Solution

SLOPE = torch.tensor([0.5, 0.1])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own (empty) ranking file."""
    monkeypatch.setenv("ATTNLAB_KERNEL_CACHE", str(tmp_path / "kernels.json"))
    dispatch.forget()
    yield tmp_path / "kernels.json"
    dispatch.forget()


@pytest.fixture
def ranked():
    """Unpinned ops follow the stored ranking (`default: ranked`) for this test."""
    with kernel_choice(KernelChoice(ranked=True)):
        yield


def prefill_inputs(requires_grad=False):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 6, 2, 4, generator=gen).requires_grad_(requires_grad) for _ in range(3))
    return {"q": q, "k": k, "v": v, "slope": SLOPE, "initial_state": None, "output_final_state": False,
            "cu_seqlens": None, "chunk_size": None}  # fmt: skip


def decode_inputs():
    gen = torch.Generator().manual_seed(1)
    return {"q": torch.randn(2, 2, 4, generator=gen), "k": torch.randn(2, 2, 4, generator=gen),
            "v": torch.randn(2, 2, 4, generator=gen), "slope": SLOPE, "state": None}  # fmt: skip


def with_solution(monkeypatch, sol: Solution) -> None:
    """Make `sol` one of its op's backends for this test (the registry itself is left as it is)."""
    real = registry.solutions
    monkeypatch.setattr(
        registry, "solutions", lambda op: {**real(op), sol.name: sol} if op == sol.definition else real(op)
    )


@pytest.fixture
def fake(monkeypatch):
    """Register a CPU-runnable fake backend of lightning_prefill; returns a setter for its fields."""
    calls = []

    def add(**fields):
        def fn(**kw):
            calls.append(kw)
            return registry.DEFINITIONS["lightning_prefill"].reference(**kw)

        sol = Solution(name="fake", definition="lightning_prefill", fn=fn, spec={}, **fields)
        with_solution(monkeypatch, sol)
        return calls

    return add


def test_lightning_on_cpu_defaults_to_torch_chunk():
    assert dispatch.select("lightning_prefill", prefill_inputs()).name == "torch_chunk"


def test_op_without_torch_chunk_falls_back_to_the_reference(monkeypatch):
    real = registry.solutions
    monkeypatch.setattr(
        registry, "solutions", lambda op: {n: s for n, s in real(op).items() if n != "torch_chunk"}
    )
    assert dispatch.select("lightning_decode", decode_inputs()).name == "torch"


def test_explicit_backend_overrides_the_choice():
    assert dispatch.select("lightning_prefill", prefill_inputs(), backend="torch").name == "torch"
    x = prefill_inputs()
    o_ref, _ = lightning_prefill(x["q"], x["k"], x["v"], SLOPE, backend="torch")
    o, _ = lightning_prefill(x["q"], x["k"], x["v"], SLOPE, backend="torch_chunk")
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=0)


def test_unknown_backend_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"backend='fast' is not registered.*allowed: torch, torch_chunk"):
        lightning_prefill(*list(prefill_inputs().values())[:4], backend="fast")


def test_gpu_backend_on_cpu_says_why():
    x = decode_inputs()
    with pytest.raises(RuntimeError, match=r"backend='triton' cannot run lightning_decode on cpu.*CUDA"):
        lightning_decode(x["q"], x["k"], x["v"], SLOPE, backend="triton")


def test_unsupported_dtype_says_which():
    x = decode_inputs()
    q, k, v = (x[n].double() for n in "qkv")
    with pytest.raises(RuntimeError, match=r"dtype float64 is not supported"):
        lightning_decode(q, k, v, SLOPE, backend="fla_naive")


def test_forward_only_backend_is_refused_when_gradients_are_needed(fake):
    calls = fake(backward=False)
    with pytest.raises(RuntimeError, match="forward-only"):
        dispatch.select("lightning_prefill", prefill_inputs(requires_grad=True), backend="fake")
    with torch.no_grad():  # the same inputs under no_grad need no backward
        assert (
            dispatch.select("lightning_prefill", prefill_inputs(requires_grad=True), backend="fake").name
            == "fake"
        )
    assert calls == []


def test_stored_ranking_is_followed_per_mode(private_cache, fake, ranked):
    fake(backward=False)
    dispatch.write_ranking("cpu", "lightning_prefill", "fwd", ["fake", "torch_chunk"], {})
    dispatch.write_ranking("cpu", "lightning_prefill", "fwd+bwd", ["torch", "torch_chunk"], {})
    assert dispatch.select("lightning_prefill", prefill_inputs()).name == "fake"
    assert dispatch.select("lightning_prefill", prefill_inputs(requires_grad=True)).name == "torch"
    stored = json.loads(private_cache.read_text())
    (key,) = stored
    assert key == dispatch.device_key("cpu") and "torch=" in key and "triton=" in key


def test_ranking_skips_peers_and_backends_that_cannot_take_the_call(fake, ranked):
    fake(backward=True, supports=lambda call: "no packs" if call.get("cu_seqlens") is not None else None)
    dispatch.write_ranking("cpu", "lightning_prefill", "fwd", ["fla_naive", "fake", "torch"], {})
    assert dispatch.select("lightning_prefill", prefill_inputs()).name == "fake"
    packed = {**prefill_inputs(), "cu_seqlens": torch.tensor([0, 6])}
    assert dispatch.select("lightning_prefill", packed).name == "torch"


def test_ranking_of_another_device_or_version_is_ignored(private_cache, ranked):
    other = dispatch.device_key("cpu").replace("torch=", "torch=0.0.0-other-")
    private_cache.write_text(json.dumps({other: {"lightning_prefill": {"fwd": {"ranking": ["torch"]}}}}))
    dispatch.forget()
    assert dispatch.select("lightning_prefill", prefill_inputs()).name == "torch_chunk"


def test_corrupt_cache_file_falls_back(private_cache, ranked):
    private_cache.write_text("{not json")
    dispatch.forget()
    assert dispatch.select("lightning_prefill", prefill_inputs()).name == "torch_chunk"


def test_mixer_decode_and_prefill_go_through_dispatch(monkeypatch):
    from attnlab.archs.config import AttnLabConfig
    from attnlab.archs.model import AttnLabForCausalLM

    used = []
    real = dispatch.select

    def spy(op, inputs, backend=None):
        sol = real(op, inputs, backend)
        used.append((op, sol.name))
        return sol

    monkeypatch.setattr(dispatch, "select", spy)
    cfg = AttnLabConfig(vocab_size=32, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        num_key_value_heads=1, layers="LFM")  # fmt: skip
    model = AttnLabForCausalLM(cfg).eval()
    with torch.no_grad():
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False)
    ops = {op for op, _ in used}
    assert {"lightning_prefill", "lightning_decode", "swa_prefill", "mla_decode"} <= ops
    assert ("lightning_prefill", "torch_chunk") in used


# --- the kernel choice: builtin | ranked, pins, the map of backends used ------------------------------


def swa_inputs(sinks=False, window=None, requires_grad=False):
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 8, 2, 4, generator=gen).requires_grad_(requires_grad) for _ in range(3))
    return {"q": q, "k": k, "v": v, "scale": None, "window": window,
            "sinks": torch.zeros(2) if sinks else None}  # fmt: skip


def test_builtin_default_ignores_the_stored_ranking(private_cache, tmp_path, monkeypatch):
    """Two different ranking files, the same choice: builtin depends only on the call."""
    picks = []
    for ranking in (["torch"], ["torch_chunk", "sdpa"]):
        path = tmp_path / f"kernels-{len(picks)}.json"
        monkeypatch.setenv("ATTNLAB_KERNEL_CACHE", str(path))
        dispatch.forget()
        dispatch.write_ranking("cpu", "swa_prefill", "fwd", ranking, {})
        dispatch.write_ranking("cpu", "lightning_prefill", "fwd", ranking, {})
        assert dispatch.stored_ranking("cpu", "swa_prefill", "fwd") == tuple(ranking)
        picks.append(
            (
                dispatch.select("swa_prefill", swa_inputs()).name,
                dispatch.select("lightning_prefill", prefill_inputs()).name,
            )
        )
    assert picks[0] == picks[1] == ("sdpa", "torch_chunk")
    with kernel_choice(parse_kernel_choice("default=ranked")):
        assert dispatch.select("swa_prefill", swa_inputs()).name == "torch_chunk"  # the last file's ranking


def test_softmax_attention_without_sinks_defaults_to_sdpa_on_cpu():
    assert dispatch.select("swa_prefill", swa_inputs()).name == "sdpa"
    assert dispatch.select("swa_prefill", swa_inputs(requires_grad=True)).name == "sdpa"
    assert dispatch.select("swa_prefill", swa_inputs(window=8)).name == "sdpa"  # the window covers all keys
    assert dispatch.select("swa_prefill", swa_inputs(sinks=True)).name == "sdpa"  # measured: still faster


def test_windowed_or_half_precision_backward_attention_defaults_to_torch_chunk_on_cpu():
    assert dispatch.select("swa_prefill", swa_inputs(window=3)).name == "torch_chunk"
    assert (
        dispatch.select("swa_prefill", swa_inputs(window=3, sinks=True, requires_grad=True)).name
        == "torch_chunk"
    )
    bf16 = {k: v.to(torch.bfloat16) if isinstance(v, torch.Tensor) else v for k, v in swa_inputs().items()}
    assert dispatch.select("swa_prefill", bf16).name == "sdpa"
    bf16 = {k: v.detach().requires_grad_() if isinstance(v, torch.Tensor) else v for k, v in bf16.items()}
    assert dispatch.select("swa_prefill", bf16).name == "torch_chunk"


def test_a_pin_is_followed():
    with kernel_choice(parse_kernel_choice("swa_prefill=torch,lightning_prefill=torch")):
        assert dispatch.select("swa_prefill", swa_inputs()).name == "torch"
        assert dispatch.select("lightning_prefill", prefill_inputs()).name == "torch"
        assert dispatch.select("lightning_decode", decode_inputs()).name == "torch_chunk"  # not pinned


def test_a_pin_that_cannot_take_the_call_says_why():
    x = decode_inputs()
    with kernel_choice(parse_kernel_choice({"lightning_decode": "triton"})):
        with pytest.raises(
            RuntimeError, match=r"kernels.lightning_decode = 'triton' cannot run .* on cpu.*CUDA"
        ):
            lightning_decode(x["q"], x["k"], x["v"], SLOPE)


def test_a_kernel_choice_names_bad_ops_and_backends():
    with pytest.raises(ValueError, match=r"kernels.swa_prefil: not an op; allowed: default, .*swa_prefill"):
        parse_kernel_choice("swa_prefil=sdpa")
    with pytest.raises(ValueError, match=r"kernels.swa_prefill = 'fla' is not a backend of swa_prefill"):
        parse_kernel_choice({"swa_prefill": "fla"})
    with pytest.raises(ValueError, match=r"kernels.default = 'fastest'; allowed: builtin, ranked"):
        parse_kernel_choice({"default": "fastest"})
    assert parse_kernel_choice("default=ranked,swa_prefill=sdpa").to_json() == {
        "default": "ranked",
        "swa_prefill": "sdpa",
    }


def test_backends_used_records_what_ran():
    backends_used(reset=True)
    x = swa_inputs()
    swa_prefill(x["q"], x["k"], x["v"])
    y = swa_inputs(window=3)
    swa_prefill(y["q"], y["k"], y["v"], window=3)
    z = prefill_inputs()
    lightning_prefill(z["q"], z["k"], z["v"], SLOPE, backend="torch")
    assert backends_used(reset=True) == {"swa_prefill": "sdpa, torch_chunk", "lightning_prefill": "torch"}
    assert backends_used() == {}
