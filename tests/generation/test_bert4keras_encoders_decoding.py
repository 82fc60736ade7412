"""UniLM beam search on ALBERT (one block shared by every layer: a KV cache slot per depth) and NEZHA
(relative positions: the new query's offsets to every cached key) against bert4keras's own
``AutoRegressiveDecoder`` on the same weights (``tests/oracles/bert4keras_encoders_oracle.py``; SimBERT-style:
source = segment 0, generated tokens = segment 1, no start token, maxlen 12, 4 beams). bert4keras refuses
ELECTRA as UniLM, so it has no decoding to compare. The two rules as in test_bert4keras_decoding.py:
bert4keras's (with the end token it chose) and HF's without an end token; kexue decodes with its KV
cache, bert4keras re-runs the whole prefix at every step.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bert4keras_common import encoders_oracle  # noqa: F401  (a fixture)
from kexue.generation import generate
from kexue.models import build_model

MAXLEN, BEAMS = 12, 4
NAMES = ["albert_unilm", "nezha_unilm"]


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.long)[None]


def _cut(ids: np.ndarray, end: int) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[: ids.index(end)] if end in ids else ids


def _setup(oracle, name):
    folder, converted, data = oracle
    model = build_model(checkpoint=converted / name).eval()
    expected = np.load(folder / name / "outputs.npz")
    rows = [(r[r > 0], s[r > 0]) for r, s in zip(data["gen_ids"], data["gen_segs"])]
    return model, expected, rows, int(expected["end_id"])


@pytest.mark.parametrize("name", NAMES)
def test_beam_search_bert4keras_rule(encoders_oracle, name):
    model, expected, rows, end = _setup(encoders_oracle, name)
    ends = []
    for i, (x, s) in enumerate(rows):
        (ours,) = generate(model, _t(x), segment_ids=_t(s), max_new_tokens=MAXLEN, eos_id=end, num_beams=BEAMS,
                           rule="bert4keras")
        theirs = expected[f"beam_{i}"]
        ends.append(int(theirs[-1]) == end)
        assert ours == _cut(theirs, end), (i, ours, theirs.tolist())
    assert any(ends), "no bert4keras hypothesis ended: the end-token rule was not exercised"


@pytest.mark.parametrize("name", NAMES)
def test_beam_search_hf_rule_without_end(encoders_oracle, name):
    model, expected, rows, _ = _setup(encoders_oracle, name)
    for i, (x, s) in enumerate(rows):
        (ours,) = generate(model, _t(x), segment_ids=_t(s), max_new_tokens=MAXLEN, eos_id=None, num_beams=BEAMS,
                           length_penalty=0.0)
        theirs = expected[f"beam_noend_{i}"].tolist()
        assert len(theirs) == MAXLEN and ours == theirs, (i, ours, theirs)
