"""`attnlab convert`: attnlab full attention <-> Hugging Face Llama, checked by logits both ways
(Llama's own modeling code is the independent reference), and the converted model served."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.cli import main
from attnlab.evals.tokenizer import byte_tokenizer
from attnlab.serve import LLM, SamplingParams


def ids(n=24, vocab=256):
    return torch.randint(0, vocab, (2, n), generator=torch.Generator().manual_seed(1))


def test_to_llama_folder_has_the_same_logits(tmp_path):
    torch.manual_seed(0)
    cfg = AttnLabConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, rope_theta=5000.0, initializer_range=0.2)  # fmt: skip
    ours = AttnLabForCausalLM(cfg).eval()
    ours.save_pretrained(tmp_path / "ours")
    byte_tokenizer().save_pretrained(tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours"), "--to", "llama", "--out", str(tmp_path / "llama")]) == 0
    llama = LlamaForCausalLM.from_pretrained(str(tmp_path / "llama")).eval()
    x = ids()
    with torch.no_grad():
        assert (llama(x).logits - ours(x).logits).abs().max().item() < 1e-4
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "llama"))
    assert tok("hi", add_special_tokens=False)["input_ids"] == [104, 105]


@pytest.mark.parametrize("tied", [False, True])
def test_from_llama_logits_and_served_tokens_match_llama(tmp_path, tied):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, head_dim=32, rope_theta=2000.0,
                      max_position_embeddings=128, tie_word_embeddings=tied, initializer_range=0.2)  # fmt: skip
    llama = LlamaForCausalLM(cfg).eval()
    llama.save_pretrained(tmp_path / "llama")
    assert main(["convert", str(tmp_path / "llama"), "--from", "llama", "--out", str(tmp_path / "ours")]) == 0
    ours = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ours")).eval()
    assert isinstance(ours, AttnLabForCausalLM)
    x = ids()
    with torch.no_grad():
        assert (llama(x).logits - ours(x).logits).abs().max().item() < 1e-4
        want = llama.generate(x[:1, :10], max_new_tokens=12, do_sample=False, eos_token_id=None)[
            0, 10:
        ].tolist()
    out = LLM(tmp_path / "ours", device="cpu", cache_memory="16MiB").generate(
        [x[0, :10].tolist()], SamplingParams(max_tokens=12, ignore_eos=True), use_tqdm=False
    )[0]
    assert out.token_ids == want


def test_convert_refuses_what_it_cannot_write(tmp_path, capsys):
    torch.manual_seed(0)
    hybrid = AttnLabForCausalLM(
        AttnLabConfig(layers="LF", num_hidden_layers=2, mixers={"L": {"type": "lightning"}})
    )
    hybrid.save_pretrained(tmp_path / "hybrid")
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "hybrid"), "--to", "llama", "--out", str(out)]) == 2
    assert "only plain full-attention" in capsys.readouterr().err and not out.exists()
    assert main(["convert", str(tmp_path / "hybrid"), "--from", "llama", "--out", str(out)]) == 2
    assert "model_type 'attnlab'" in capsys.readouterr().err
    (out / "keep.txt").parent.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["convert", str(tmp_path / "hybrid"), "--to", "llama", "--out", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
