"""Data pipeline: local corpora are read through `datasets`, the stdlib default corpus is found,
tokenizers (byte, BPE cached in the run dir) round-trip, packing and the step-indexed batch stream
behave as specified, and a text run exports a model + tokenizer that load with the Auto classes."""

from __future__ import annotations

import inspect
import json
import os

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from train_helpers import tiny_run
from transformers import AutoModelForCausalLM, AutoTokenizer

from attnlab.evals import tokenizer as tokenizer_module
from attnlab.evals.tokenizer import build_tokenizer, byte_tokenizer, encode
from attnlab.train.config import TextSection, config_from_dict
from attnlab.train.corpus import load_documents, pack, sample_documents, split_rows, stdlib_sources
from attnlab.train.data import Slice, StepBatches
from attnlab.train.run import train

DOCS = ["def f(x):\n    return x + 1\n", "class A:\n    pass\n", "naïve ünïcode — ok\n"]


@pytest.fixture
def load_dataset_calls(monkeypatch):
    calls = []
    real = datasets.load_dataset

    def spy(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    return calls


def write_corpus(tmp_path, fmt: str) -> list[str]:
    if fmt == "txt":
        paths = [tmp_path / f"doc{i}.txt" for i in range(len(DOCS))]
        for p, d in zip(paths, DOCS, strict=True):
            p.write_text(d)
        return [str(p) for p in paths]
    if fmt == "jsonl":
        path = tmp_path / "docs.jsonl"
        path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
        return [str(path)]
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": DOCS}), path)
    return [str(path)]


@pytest.mark.parametrize("fmt, builder", [("txt", "text"), ("jsonl", "json"), ("parquet", "parquet")])
def test_local_files_are_read_through_datasets(fmt, builder, tmp_path, load_dataset_calls):
    files = write_corpus(tmp_path, fmt)
    docs = load_documents(TextSection(files=files))
    assert load_dataset_calls == [builder]
    assert sorted(docs) == sorted(DOCS)  # plain text: one document per whole file


def test_missing_text_column_names_the_field_and_the_columns(tmp_path):
    files = write_corpus(tmp_path, "jsonl")
    with pytest.raises(ValueError, match=r"data.text.text_field = 'body'.*columns: text, id"):
        load_documents(TextSection(files=files, text_field="body"))


def test_default_corpus_is_the_stdlib_source_on_this_machine():
    files = stdlib_sources()
    assert inspect.getsourcefile(os) in files and inspect.getsourcefile(inspect) in files
    assert not any("site-packages" in f or "/test/" in f for f in files)
    assert len(files) > 300


def test_sample_documents_is_seeded_and_respects_max_chars():
    docs = [f"doc{i} " * 10 for i in range(20)]
    a, b = sample_documents(docs, 3, 100), sample_documents(docs, 3, 100)
    assert a == b and sum(map(len, a)) == 100
    assert sample_documents(docs, 4, None) != sample_documents(docs, 3, None)


def test_byte_tokenizer_ids_are_utf8_bytes_and_round_trip(tmp_path):
    tok = byte_tokenizer()
    text = "héllo\n\tworld 😀 \x00end"
    assert tok(text)["input_ids"] == list(text.encode("utf-8")) and len(tok) == 256
    assert tok.decode(list(text.encode("utf-8"))) == text
    assert encode(tok, [text])[0].tolist() == list(text.encode("utf-8"))
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == list(text.encode("utf-8"))


def test_bpe_is_trained_once_and_cached_in_the_run_dir(tmp_path, monkeypatch):
    corpus = [d * 20 for d in DOCS]
    tok = build_tokenizer("bpe", tmp_path / "tokenizer", lambda: iter(corpus), 300)
    assert (tmp_path / "tokenizer" / "tokenizer.json").exists()
    assert 256 < len(tok) <= 300
    ids = encode(tok, [DOCS[0]])[0]
    assert len(ids) < len(DOCS[0].encode())  # merges compress
    assert tok.decode(ids.tolist()) == DOCS[0]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached tokenizer must be reused")

    monkeypatch.setattr(tokenizer_module.Tokenizer, "train_from_iterator", no_training, raising=False)
    again = build_tokenizer("bpe", tmp_path / "tokenizer", lambda: iter(corpus), 300)
    assert encode(again, [DOCS[0]])[0].tolist() == ids.tolist()


def test_pack_puts_eos_between_documents_and_drops_the_short_tail():
    rows = pack([np.array([1, 2, 3]), np.array([4, 5])], seq_len=3, eos_id=9)
    assert rows.tolist() == [[1, 2, 3], [9, 4, 5]]  # the trailing [9] is dropped
    assert pack([np.array([1, 2, 3, 4])], seq_len=2, eos_id=None).tolist() == [[1, 2], [3, 4]]
    train_rows, val_rows = split_rows(torch.arange(20).view(10, 2), 0.2)
    assert train_rows.shape == (8, 2) and val_rows.tolist() == [[16, 17], [18, 19]]


def one_slice(ids, batch_size, name="s"):
    return Slice(name, ids, ids, ids[:1], ids[:1], batch_size)


def test_step_batches_are_a_function_of_the_batch_index():
    ids = torch.arange(10).unsqueeze(1)  # row i holds i
    stream = StepBatches([one_slice(ids, 3)], seed=5, total=12)
    again = StepBatches([one_slice(ids, 3)], seed=5, total=12)
    first_pass = torch.cat([stream[g]["input_ids"] for g in range(3)]).flatten().tolist()
    assert len(set(first_pass)) == 9  # 3 batches of a pass: distinct rows (the tail row is skipped)
    assert all(torch.equal(stream[g]["input_ids"], again[g]["input_ids"]) for g in (7, 0, 11, 4))
    second_pass = torch.cat([stream[g]["input_ids"] for g in range(3, 6)]).flatten().tolist()
    assert second_pass != first_pass  # reshuffled per pass


def test_a_mixture_alternates_slices_batch_by_batch():
    short, long = torch.zeros(8, 4, dtype=torch.long), torch.ones(6, 16, dtype=torch.long)
    stream = StepBatches([one_slice(short, 4, "4"), one_slice(long, 2, "16")], seed=0, total=8)
    shapes = [tuple(stream[g]["input_ids"].shape) for g in range(6)]
    assert shapes == [(4, 4), (2, 16)] * 3  # each batch one slice: no padding


def test_a_slice_with_start_step_joins_the_rotation_later():
    short, long = torch.zeros(8, 4, dtype=torch.long), torch.ones(6, 16, dtype=torch.long)
    late = Slice("16", long, long, long[:1], long[:1], 2, start_step=2)
    stream = StepBatches([one_slice(short, 4, "4"), late], seed=0, total=12, batches_per_step=2)
    kinds = [int(stream[g]["input_ids"][0, 0]) for g in range(8)]
    assert kinds == [0, 0, 0, 0, 0, 1, 0, 1]  # steps 0-1 (4 batches) short only, then alternating


def test_text_run_exports_model_and_tokenizer_for_the_auto_classes(tmp_path):
    files = write_corpus(tmp_path, "txt")
    (tmp_path / "big.txt").write_text("".join(DOCS) * 40)
    values = tiny_run(
        tmp_path / "run",
        data={
            "source": "text",
            "batch_size": 4,
            "text": {
                "files": [*files, str(tmp_path / "big.txt")],
                "tokenizer": "bpe",
                "bpe_vocab_size": 300,
                "seq_len": 16,
                "val_fraction": 0.1,
            },
        },
        trainer={"max_steps": 3},
    )
    result = train(config_from_dict(values))
    assert result["status"] == "finished" and result["val/ppl"] > 1
    hf = tmp_path / "run" / "hf"
    model = AutoModelForCausalLM.from_pretrained(hf)
    tok = AutoTokenizer.from_pretrained(hf)
    assert (
        model.config.vocab_size == len(tok) and (tmp_path / "run" / "tokenizer" / "tokenizer.json").exists()
    )
    ids = torch.tensor([tok(DOCS[0])["input_ids"]])
    assert torch.isfinite(model(ids).logits).all()
