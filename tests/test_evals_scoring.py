"""Scoring against hand-computed cases: RULER string_match_all / string_match_part (with RULER's
prediction post-processing) and answer-token exact match for token tasks."""

from __future__ import annotations

import pytest
import torch

from attnlab.evals.scoring import (
    answer_token_hits,
    postprocess,
    score_text,
    string_match_all,
    string_match_part,
)


def test_string_match_all_is_the_fraction_of_references_found_case_insensitively():
    assert string_match_all("The values are 123 and Abc.", ["123", "abc", "zzz"]) == pytest.approx(2 / 3)
    assert string_match_all("ABCDE FGHIJ", ["abcde", "fghij"]) == 1.0
    assert string_match_all("", ["x"]) == 0.0


def test_string_match_part_is_one_if_any_reference_is_found():
    assert string_match_part("it is 42", ["7", "42"]) == 1.0
    assert string_match_part("it is 4 2", ["42"]) == 0.0


def test_postprocess_strips_and_turns_control_characters_into_newlines():
    assert postprocess("  12\x0034\t \n") == "12\n34"


def test_score_text_applies_postprocessing_before_matching():
    # the NUL splits "1234" into "12\n34": each part matches, the joined reference no longer does
    assert score_text(" 12\x0034", ["12", "34"], "string_match_all") == 1.0
    assert score_text(" 12\x0034", ["1234"], "string_match_all") == 0.0
    with pytest.raises(ValueError, match="unknown metric 'f1'; allowed: string_match_all, string_match_part"):
        score_text("a", ["a"], "f1")


def test_answer_token_hits_reads_the_prediction_one_position_before_each_label():
    labels = torch.tensor([[-100, -100, 5, -100, 7]])  # answers at t=2 and t=4
    logits = torch.zeros(1, 5, 10)
    logits[0, 1, 5] = 1.0  # position 1 predicts token 2: right
    logits[0, 3, 6] = 1.0  # position 3 predicts token 4 as 6 instead of 7: wrong
    logits[0, 2, 7] = 1.0  # a 7 one position off does not count
    assert answer_token_hits(logits, labels).tolist() == [True, False]
