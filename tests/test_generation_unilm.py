"""UniLM seq2seq: prefix mask + target-only loss + cached decoder agree — a tiny BERT overfits real
title -> first-line pairs of Tang poems and regenerates every target exactly (greedy, batched, ragged)."""
import torch

from kexue.datasets import poems
from kexue.generation import beam_search, decoding_state, greedy
from kexue.losses.seq2seq import seq2seq_loss
from kexue.models import build_model
from kexue.tokenizers import Tokenizer, build_vocab
from generation_common import one_thread  # noqa: F401,E402  (autouse fixture)


def left_pad(rows: list[list[int]], pad: int = 0):
    n = max(map(len, rows))
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, n - len(r):], mask[i, n - len(r):] = torch.tensor(r), 1
    return ids, mask


def test_seq2seq_loss_counts_only_targets():
    logits = torch.randn(1, 5, 7)
    ids = torch.tensor([[2, 4, 3, 5, 3]])
    segs = torch.tensor([[0, 0, 0, 1, 1]])
    want = torch.nn.functional.cross_entropy(logits[0, 2:4], ids[0, 3:5])
    assert torch.allclose(seq2seq_loss(logits, ids, segs), want)


def test_unilm_overfits_and_regenerates_targets():
    torch.manual_seed(0)
    pairs = [(p.title, p.text.split("\n")[0]) for p in poems("tang300")[:6]]
    tok = Tokenizer(build_vocab(a + b for a, b in pairs))
    model = build_model(dict(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128, max_position_embeddings=64, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0), application="unilm", with_mlm=True)
    batch = tok.encode_batch(pairs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        out = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
        loss = seq2seq_loss(out.logits, batch["input_ids"], batch["segment_ids"] * batch["attention_mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 2e-3:
            break
    model.eval()
    sources = [tok.encode(a)[0] for a, _ in pairs]
    ids, mask = left_pad(sources, tok.pad_id)
    got = greedy(decoding_state(model, ids, mask), 40, eos_id=tok.sep_id)
    assert [tok.decode(g) for g in got] == [b for _, b in pairs]
    targets = [tok.encode(a, b)[0][len(s):-1] for (a, b), s in zip(pairs, sources)]
    assert got == targets
    beams = beam_search(decoding_state(model, ids, mask), 40, eos_id=tok.sep_id, num_beams=3)
    uncached = greedy(decoding_state(model, ids, mask, use_cache=False), 40, eos_id=tok.sep_id)
    assert beams == got == uncached
