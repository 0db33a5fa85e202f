"""adafv.answer: the one schema both paths write (the reference and the bundle)."""

from __future__ import annotations

import pytest

from adafv.answer import BUNDLE_FACTS, Answer


def answer(**changes):
    base = dict(model="m", path="reference", method="adafv", mode="exact", layout="compact", keep=2, text="a",
                tokens=[5], kept_positions=[1, 3], num_visual_tokens=4, num_llm_visual_tokens=2, num_crops=1,
                grid=[1, 1], timings_ms={"preprocess": 1.0, "vision": 1.0, "select": 0.1, "generate": 2.0,
                                         "total": 4.1})  # fmt: skip
    return Answer(**{**base, **changes})


def test_keys_in_the_documented_order():
    d = answer(merged_grid=[2, 2]).to_dict()
    assert list(d) == ["model", "path", "method", "mode", "layout", "keep", "text", "tokens", "kept_positions",
                       "num_kept", "num_visual_tokens", "num_llm_visual_tokens", "num_crops", "grid", "merged_grid",
                       "timings_ms"]  # fmt: skip
    assert d["num_kept"] == 2 and "merged_grid" not in answer().to_dict()


@pytest.mark.parametrize("changes,message", [
    ({"kept_positions": [1, 4]}, "must lie below 4"),
    ({"path": "engine"}, "path must be one of"),
    ({"timings_ms": {"total": 1.0}}, "timings_ms lacks"),
    ({"facts": {"bundle": "x"}}, "facts are"),
    ({"path": "bundle"}, "facts are"),
])  # fmt: skip
def test_a_malformed_answer_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        answer(**changes)


def test_a_bundle_answer_carries_its_facts_before_the_timings():
    timings = {k: 1.0 for k in ("preprocess", "vision", "prefill", "time_to_first_token", "decode",
                                "decode_tokens_per_s", "total")}  # fmt: skip
    d = answer(path="bundle", facts={k: 0 for k in BUNDLE_FACTS}, timings_ms=timings).to_dict()
    assert list(d)[-len(BUNDLE_FACTS) - 1 : -1] == list(BUNDLE_FACTS) and list(d)[-1] == "timings_ms"
