"""Shared by the generation tests: decoding is many tiny ops, and with 2 intra-op threads on a busy
2-core machine every op waits for the second thread to be scheduled (ms per op). One thread is faster."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def left_pad(rows: list[list[int]], pad: int = 0):
    """Left-pad token lists (prefix decoding: every row's next token sits in the last column)."""
    n = max(map(len, rows))
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, n - len(r):], mask[i, n - len(r):] = torch.tensor(r), 1
    return ids, mask


def train_unilm(pairs, hidden: int, steps: int, stop_loss: float = 0.0, cond_dim: int | None = None):
    """A 2-layer UniLM BERT trained (target-only loss, Adam 1e-2) on (source, target) text pairs."""
    from kexue.losses.seq2seq import seq2seq_loss
    from kexue.models import build_model
    from kexue.text.tokenizer import Tokenizer, build_vocab

    tok = Tokenizer(build_vocab(a + b for a, b in pairs))
    model = build_model(dict(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=2 * hidden, max_position_embeddings=64, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0), application="unilm", with_mlm=True, cond_dim=cond_dim)
    batch = tok.encode_batch(pairs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        out = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
        loss = seq2seq_loss(out.logits, batch["input_ids"], batch["segment_ids"] * batch["attention_mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < stop_loss:
            break
    return model.eval(), tok


# A small decoding model for the generation tests: vocabulary, condition size, end token, config.
V, COND, EOS = 60, 8, 3
BASE = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def peaked(model, scale=20.0):
    """Random weights give near-uniform outputs; sharpen them and make the conditions matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".cond_" in name:
                p.normal_(0, 0.5)
        emb = model.embeddings.token.weight if hasattr(model, "embeddings") else model.token.weight
        emb.mul_(scale)
        emb[EOS].mul_(1.2)  # the end token is likely enough to end some rows
    return model.eval()
