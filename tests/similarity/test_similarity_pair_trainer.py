"""The one pair trainer (train_pair_encoder) behind both `kexue similarity` and the demo's finetune_cosent: its
loss on one forward pass over both sides equals the CoSENT / cosine formulas on separate passes, a time budget
cuts it, the dev callback scores the trained encoder, length batches are reshuffled every epoch, and the loss
runs through the model that fit hands it (the DDP wrapper under torchrun), and an epoch's remainder of a pair or
two joins the batch before it instead of making an update of its own."""
import pytest
import torch
import torch.nn.functional as F

from kexue.data import shipped as datasets
from kexue.models import build_model
from kexue.models.config import TransformerConfig
from kexue.models.pretrained import embed
from kexue.similarity import pair_training
from kexue.similarity.evaluate import evaluate_pairs
from kexue.similarity.finetune import finetune_cosent
from kexue.similarity.pair_training import train_pair_encoder
from kexue.text.tokenizer import Tokenizer, build_vocab, pad_batch


@pytest.fixture(scope="module")
def data():
    pairs = datasets.sts_en("dev")[:24]
    dev = datasets.sts_en("dev")[24:48]
    tok = Tokenizer(build_vocab([s for p in pairs + dev for s in (p.a, p.b)]))
    return tok, pairs, dev


def _encoder(tok, dropout=0.1):
    torch.manual_seed(0)
    return build_model(TransformerConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))


def _side(model, tok, texts, maxlen=64):
    batch = pad_batch([tok.encode(t, maxlen=maxlen) for t in texts], tok.pad_id)
    h = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden
    m = batch["attention_mask"].unsqueeze(-1).float()
    return (h * m).sum(1) / m.sum(1)


@pytest.mark.parametrize("loss", ["cosent", "cosine"])
@pytest.mark.parametrize("batching", ["shuffle", "length"])
def test_first_loss_equals_the_formula_on_separate_passes(data, loss, batching):
    tok, pairs, _ = data
    model = _encoder(tok, dropout=0.0)
    y = torch.tensor([p.score for p in pairs])
    with torch.no_grad():  # the oracle: each side its own padded batch, the loss written from its formula
        cos = F.cosine_similarity(_side(model, tok, [p.a for p in pairs]), _side(model, tok, [p.b for p in pairs]))
        if loss == "cosent":  # log(1 + Σ_{y_i > y_j} exp(20 (cos_j − cos_i)))
            d = 20 * (cos[None, :] - cos[:, None])[y[:, None] > y[None, :]]
            expect = torch.logsumexp(torch.cat([torch.zeros(1), d]), 0)
        else:
            expect = ((cos - y / max(1.0, y.max().item())) ** 2).mean()
    # one batch holding every pair: both losses are invariant to the order of the pairs
    history = train_pair_encoder(model, tok, pairs, loss, steps=1, batch_size=len(pairs), lr=1e-3, batching=batching,
                                 progress=False)
    assert abs(history["loss"][0] - expect.item()) <= 1e-5


def test_budget_stops_and_dev_scores_the_trained_encoder(data):
    tok, pairs, dev = data
    model = _encoder(tok)
    history = train_pair_encoder(model, tok, pairs, "cosent", steps=500, batch_size=8, lr=1e-3, dev=dev,
                                 progress=False, seconds=1e-6, batching="length", schedule="constant", warmup=10)
    assert 1 <= len(history["loss"]) < 500 and not model.training
    rho = evaluate_pairs(lambda texts: embed(model, tok, texts, maxlen=64), dev)
    assert history["eval"][-1]["spearman"] == pytest.approx(rho, abs=1e-9)
    with pytest.raises(ValueError, match="batching must be 'shuffle' or 'length'"):
        train_pair_encoder(model, tok, pairs, steps=1, batching="sorted", progress=False)
    with pytest.raises(ValueError, match="batch_size must be"):
        train_pair_encoder(model, tok, pairs, epochs=1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="lr must be"):  # refused after freezing: the embeddings are given back
        finetune_cosent(model, tok, pairs, lr=0.0, max_steps=1, progress=False)
    assert model.embeddings.token.weight.requires_grad and not model.training


def test_length_batches_are_reshuffled_every_epoch(data, monkeypatch):
    tok, pairs, _ = data
    drawn = []
    real = pair_training.length_batches

    def recording(lengths, batch_size, seed=0, **kw):
        drawn.append(real(lengths, batch_size, seed, **kw))
        return drawn[-1]

    monkeypatch.setattr(pair_training, "length_batches", recording)
    losses = finetune_cosent(_encoder(tok), tok, pairs, seconds=None, batch_size=8, max_steps=6, seed=3,
                             progress=False)
    assert len(losses) == 6
    epochs = {tuple(map(tuple, b)) for b in drawn}
    assert len(epochs) >= 2  # epoch 1 is not epoch 0 again
    lengths = [len(tok.encode(p.a, maxlen=64)[0]) + len(tok.encode(p.b, maxlen=64)[0]) for p in pairs]
    assert drawn[0] == real(lengths, 8, 3)  # epoch 0: the seed itself, as before
    for b in drawn:
        assert sorted(i for batch in b for i in batch) == list(range(len(pairs)))


def test_the_loss_runs_through_the_model_fit_hands_it(data, monkeypatch):
    """Under torchrun fit hands the loss its DDP wrapper: calling the bare module instead skips the gradient sync."""
    from kexue.train import loop

    tok, pairs, _ = data
    calls = []

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            calls.append(1)
            return self.inner(*args)

    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", lambda model, *a, **kw: real_fit(Wrapper(model), *a, **kw))
    train_pair_encoder(_encoder(tok), tok, pairs, "cosent", steps=3, batch_size=8, progress=False)
    assert len(calls) == 3


@pytest.mark.parametrize("batching", ["shuffle", "length"])
def test_a_remainder_of_two_pairs_joins_the_batch_before_it(data, monkeypatch, batching):
    """18 pairs in batches of 8: updates on 8 and 10 pairs per epoch (2 < half a batch merged), every pair once;
    ``merge_remainder=0`` keeps the degenerate update on 2 pairs; 20 pairs (remainder 4 = half) keep it too."""
    from kexue.train import loop

    tok, pairs, _ = data
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, batch, labels):
            seen.append(len(labels))
            return self.inner(batch, labels)

    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", lambda model, *a, **kw: real_fit(Spy(model), *a, **kw))
    for n, merge, per_epoch in ((18, 0.5, [8, 10]), (18, 0.0, [2, 8, 8]), (20, 0.5, [4, 8, 8])):
        seen.clear()
        history = train_pair_encoder(_encoder(tok), tok, pairs[:n], "cosent", epochs=2, batch_size=8, lr=1e-3,
                                     batching=batching, progress=False, merge_remainder=merge)
        assert sorted(seen[:len(per_epoch)]) == sorted(seen[len(per_epoch):]) == per_epoch
        assert len(history["loss"]) == 2 * len(per_epoch) == 2 * pair_training.batches_per_epoch(n, 8, merge)
    with pytest.raises(ValueError, match="merge_remainder"):
        train_pair_encoder(_encoder(tok), tok, pairs, epochs=1, batch_size=8, progress=False, merge_remainder=1.5)
