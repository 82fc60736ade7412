"""A T5 encoder batch gives every row its own result whichever side it is padded on: bert4keras-converted
T5 (``cross_position_bias``: the cross-attention adds the decoder's relative bias of query i and encoder key
j) counts j over the row's real tokens, so a left-padded row equals the same row right-padded and the row
alone. Checked on seeded random T5s (with and without the cross bias) fed real Chinese sentences: decoder
logits, greedy, beam search (both rules) and seeded sampling."""
import pytest
import torch

from families_common import sentences, tiny, tokenizer
from generation_common import one_thread  # noqa: F401  (autouse fixture)
from kexue.generation import generate

STEPS = 8


def batches():
    tok = tokenizer()
    by_length = {}
    for s in sentences(40):
        ids = tok.encode(s, maxlen=40)[0]
        by_length.setdefault(len(ids), ids)
    rows = [by_length[n] for n in sorted(by_length)[::max(1, len(by_length) // 4)][:4]]
    assert len({len(r) for r in rows}) == 4  # four different lengths
    n = max(len(r) for r in rows)
    right = torch.zeros(len(rows), n, dtype=torch.long)
    left = torch.zeros_like(right)
    for i, r in enumerate(rows):
        right[i, :len(r)] = torch.tensor(r)
        left[i, n - len(r):] = torch.tensor(r)
    return rows, (right, (right != 0).long()), (left, (left != 0).long())


def model(cross: bool):
    m = tiny("t5", layers=2, hidden=32, seed=3, cross_position_bias=cross)
    with torch.no_grad():  # a bias table large enough to move the logits
        m.decoder_bias.embedding.weight.normal_(std=5.0)
        m.encoder_bias.embedding.weight.normal_(std=5.0)
    return m


@pytest.mark.parametrize("cross", [True, False])
def test_decoder_logits_do_not_depend_on_the_padding_side(cross):
    m = model(cross)
    rows, (r_ids, r_mask), (l_ids, l_mask) = batches()
    dec = torch.tensor([[m.config.decoder_start_token_id] + rows[0][1:6]] * len(rows))
    with torch.no_grad():
        right = m.decode(dec, m.encode(r_ids, r_mask), r_mask)
        left = m.decode(dec, m.encode(l_ids, l_mask), l_mask)
        alone = torch.cat([m.decode(dec[:1], m.encode(torch.tensor([r]))) for r in rows])
    assert (left - right).abs().max() <= 1e-5 and (alone - right).abs().max() <= 1e-5
    if cross:  # the absolute key positions of before would move a left-padded row's logits
        keys = torch.arange(l_ids.shape[1])[None]
        with torch.no_grad():
            enc = m.encode(l_ids, l_mask)
            x = m.decoder_bias(dec.shape[1], l_ids.shape[1], key_positions=keys.expand(len(rows), -1))
            y = m.decoder_bias(dec.shape[1], l_ids.shape[1], key_positions=(l_mask.cumsum(1) - 1).clamp(min=0))
        assert (x - y).abs().max() > 0.1 and enc.shape[0] == len(rows)


@pytest.mark.parametrize("cross", [True, False])
@pytest.mark.parametrize("search", [dict(), dict(num_beams=3), dict(num_beams=3, rule="bert4keras"),
                                    dict(num_beams=1, rule="bert4keras"),
                                    dict(do_sample=True, top_k=20, seed=5, num_samples=2)],
                         ids=["greedy", "beam-hf", "beam-bert4keras", "top1-bert4keras", "sampling"])
def test_generations_per_row(cross, search):
    m = model(cross)
    rows, (r_ids, r_mask), (l_ids, l_mask) = batches()
    eos = m.config.eos_token_id
    right = generate(m, r_ids, r_mask, max_new_tokens=STEPS, eos_id=eos, **search)
    left = generate(m, l_ids, l_mask, max_new_tokens=STEPS, eos_id=eos, **search)
    assert left == right
    assert sum(len(r) for r in right) > len(right) * 3  # real generations, not empty rows
    if not search.get("do_sample"):  # a sampler draws for the whole batch: rows alone see other draws
        alone = [generate(m, torch.tensor([r]), max_new_tokens=STEPS, eos_id=eos, **search)[0] for r in rows]
        assert alone == right
