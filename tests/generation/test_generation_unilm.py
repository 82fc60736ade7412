"""UniLM seq2seq: prefix mask + target-only loss + cached decoder agree — a tiny BERT overfits real
title -> first-line pairs of Tang poems and regenerates every target exactly (greedy, batched, ragged)."""
import torch

from kexue.data.shipped import poems
from kexue.generation import beam_search, decoding_state, greedy
from kexue.losses.seq2seq import seq2seq_loss
from generation_common import left_pad, one_thread, train_unilm  # noqa: F401,E402  (autouse fixture)


def test_seq2seq_loss_counts_only_targets():
    logits = torch.randn(1, 5, 7)
    ids = torch.tensor([[2, 4, 3, 5, 3]])
    segs = torch.tensor([[0, 0, 0, 1, 1]])
    want = torch.nn.functional.cross_entropy(logits[0, 2:4], ids[0, 3:5])
    assert torch.allclose(seq2seq_loss(logits, ids, segs), want)


def test_unilm_overfits_and_regenerates_targets():
    torch.manual_seed(0)
    pairs = [(p.title, p.text.split("\n")[0]) for p in poems("tang300")[:6]]
    model, tok = train_unilm(pairs, hidden=64, steps=200, stop_loss=2e-3)
    sources = [tok.encode(a)[0] for a, _ in pairs]
    ids, mask = left_pad(sources, tok.pad_id)
    got = greedy(decoding_state(model, ids, mask), 40, eos_id=tok.sep_id)
    assert [tok.decode(g) for g in got] == [b for _, b in pairs]
    targets = [tok.encode(a, b)[0][len(s):-1] for (a, b), s in zip(pairs, sources)]
    assert got == targets
    beams = beam_search(decoding_state(model, ids, mask), 40, eos_id=tok.sep_id, num_beams=3)
    uncached = greedy(decoding_state(model, ids, mask, use_cache=False), 40, eos_id=tok.sep_id)
    assert beams == got == uncached
