"""keep_tokens / compound_tokens (kexue.models.vocab) apart from the bert4keras oracle
(tests/models/test_bert4keras_variants.py): the row formula on a seeded table, the token-id fields moved to
their new ids, and every bad list refused with a message naming the item and the file."""
import json

import numpy as np
import pytest
import torch

from kexue.models import build_model
from kexue.models.vocab import (Compound, parse_compound_tokens, parse_keep_tokens, read_token_list, trim_rows,
                                trim_tokens)

T5 = dict(model_type="t5", vocab_size=20, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
          eos_token_id=3, decoder_start_token_id=2, pad_token_id=0, tie_word_embeddings=False, dropout_rate=0.0)


def test_rows_are_gathered_then_averaged_in_float64():
    t = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    keep, compound = [0, 7, 3, 5], [Compound((1, 2)), Compound((0, 3, 3), (0.5, 2.0, 1.0))]
    out = trim_rows(t, keep, compound)
    kept = t.numpy()[keep]
    want = np.concatenate([kept, [kept[[1, 2]].astype(np.float64).mean(0),
                                  (0.5 * kept[0].astype(np.float64) + 3.0 * kept[3]) / 3.5]]).astype(np.float32)
    assert out.dtype == torch.float32 and torch.equal(out[:4], t[keep])
    assert (out - torch.from_numpy(want)).abs().max() <= 1e-6


def test_build_model_moves_token_ids_and_refuses_a_dropped_one():
    torch.manual_seed(0)
    full = build_model(T5)
    keep = [0, 5, 3, 2, 9]
    small = build_model(T5, keep_tokens=keep, compound_tokens=[[1, 4]])
    assert small.config.vocab_size == 6
    assert (small.config.pad_token_id, small.config.eos_token_id, small.config.decoder_start_token_id) == (0, 2, 3)
    assert small.lm_head.weight.shape == (6, 16)
    # a random model: trim the full one's rows and compare (build_model seeds nothing, so copy them in)
    state = {k: trim_rows(v, keep, [Compound((1, 4))]) if k in ("shared.weight", "lm_head.weight") else v
             for k, v in full.state_dict().items()}
    small.load_state_dict(state)
    ids = torch.tensor([[1, 2, 4, 3]])
    with torch.no_grad():
        a = small(ids, torch.tensor([[3, 1]]))
        b = full(torch.tensor([[5, 3, 9, 2]]), torch.tensor([[2, 5]]))
    assert torch.allclose(a[..., :5], b[..., keep], atol=1e-6)
    with pytest.raises(ValueError, match="'eos_token_id'=3: token 3 is not in keep_tokens"):
        build_model(T5, keep_tokens=[0, 1, 2])


@pytest.mark.parametrize("value,match", [([0, 1, 1], "id 1 is kept twice"), ([], "is empty"),
                                         ([0, "1"], "list of integer token ids"), ("0,1", "list of integer")])
def test_bad_keep_tokens(value, match):
    with pytest.raises(ValueError, match=match):
        parse_keep_tokens(value)


@pytest.mark.parametrize("value,match", [
    ([[]], "item 0 names no token"), ([[1, 2], {"ids": [1], "weights": [1, 2]}], "item 1 field 'weights'"),
    ([{"ids": [1, 2], "weights": [1, -1]}], "sum to zero"), ([{"ids": [1], "colour": 2}], "unknown key"),
    ([{"ids": [1], "token": " x"}], "field 'token'"), ({"ids": [1]}, "must be a list")])
def test_bad_compound_tokens(value, match):
    with pytest.raises(ValueError, match=match):
        parse_compound_tokens(value)


def test_ids_out_of_range_and_repeated_spellings_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"keep_tokens: id 20 is outside the checkpoint's vocabulary \[0, 20\)"):
        build_model(T5, keep_tokens=[0, 20])
    with pytest.raises(ValueError, match=r"compound_tokens item 0: id 3 is outside the kept vocabulary \[0, 3\)"):
        build_model(T5, keep_tokens=[0, 2, 3], compound_tokens=[[3]])
    assert trim_tokens(["[PAD]", "北", "##京", "人"], [0, 1, 2], [Compound((1, 2))]) == ["[PAD]", "北", "##京", "北京"]
    with pytest.raises(ValueError, match="holds '北' twice"):
        trim_tokens(["[PAD]", "北", "京"], None, [Compound((1,))])
    path = tmp_path / "keep.json"
    path.write_text("[0, 1,")
    with pytest.raises(ValueError, match=f"keep_tokens file {path} is not valid JSON"):
        read_token_list(path, "keep_tokens")
    path.write_text(json.dumps([0, 0]))
    with pytest.raises(ValueError, match=f"keep_tokens file {path}: id 0 is kept twice"):
        read_token_list(path, "keep_tokens")
