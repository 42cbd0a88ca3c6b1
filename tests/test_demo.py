"""`attnlab demo`'s cache check: cached `generate()` against a no-cache greedy loop, tokens and
logits, on peaked weights. It passes on the real cache, and fails on a planted RoPE off-by-one on
cached chunks that the argmax-only check on default-init weights (what it replaced) let through."""

from __future__ import annotations

import json

from cache_checks import plant_rope_off_by_one

from attnlab.cli import main
from attnlab.serve import demo
from attnlab.serve.demo import DEMO_VARIANTS, LOGIT_TOLERANCE, run_demo

NO_POSITIONS = {"lightning"}  # a layout without RoPE: the planted bug cannot touch it


def test_every_row_reports_equal_tokens_and_logits_within_tolerance(tmp_path):
    rows = run_demo(tmp_path, new_tokens=3)
    assert [r["variant"] for r in rows] == list(DEMO_VARIANTS)
    for r in rows:
        assert r["tokens_equal"] and 0 <= r["max_abs_logit_diff"] <= LOGIT_TOLERANCE, r["variant"]
        assert r["cache_matches_no_cache"]
    table = (tmp_path / "demo.md").read_text()
    assert "| tokens equal | max \\|Δlogit\\| |" in table
    assert f"| yes | {rows[0]['max_abs_logit_diff']:.1e} |" in table


def test_a_rope_off_by_one_fails_the_demo_while_the_old_argmax_check_passes(tmp_path, monkeypatch):
    plant_rope_off_by_one(monkeypatch)
    assert main(["demo", "--out", str(tmp_path / "peaked"), "--new-tokens", "3"]) == 1
    rows = json.loads((tmp_path / "peaked" / "demo.json").read_text())
    failed = {r["variant"] for r in rows if not r["cache_matches_no_cache"]}
    assert failed == set(DEMO_VARIANTS) - NO_POSITIONS
    assert all(r["max_abs_logit_diff"] > 10 * LOGIT_TOLERANCE for r in rows if r["variant"] in failed)

    monkeypatch.setattr(demo, "PEAKED_INIT", 0.02)  # HF's init: attention almost uniform
    old = run_demo(tmp_path / "default-init", new_tokens=3)
    assert all(r["tokens_equal"] for r in old)  # what the demo checked before: every row green
