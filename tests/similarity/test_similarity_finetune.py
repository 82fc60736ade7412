"""The CPU fine-tune loops on a tiny random BERT: batching covers the data, losses finite, errors clear."""
import pytest
import torch

from kexue.data import shipped as datasets
from kexue.data.shipped import Pair
from kexue.models import build_model
from kexue.models.config import TransformerConfig
from kexue.similarity.finetune import CrossEncoder, finetune_cosent, finetune_cross_encoder, length_batches
from kexue.text.tokenizer import Tokenizer, build_vocab


@pytest.fixture(scope="module")
def tiny():
    pairs = datasets.sts_en("dev")[:24]
    tok = Tokenizer(build_vocab([s for p in pairs for s in (p.a, p.b)]))
    cfg = TransformerConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=128)
    return build_model(cfg), tok, pairs


def test_length_batches_partition():
    lengths = [5, 3, 9, 1, 4, 4, 7, 2, 8, 6, 3]
    batches = length_batches(lengths, 4, seed=1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths))) and all(len(b) <= 4 for b in batches)


def test_finetune_loops_run(tiny):
    model, tok, pairs = tiny
    losses = finetune_cosent(model, tok, pairs, max_steps=2, batch_size=8, progress=False)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert not model.training and model.embeddings.token.weight.requires_grad  # restored
    ce = CrossEncoder(model, tok, maxlen=64)
    losses = finetune_cross_encoder(ce, pairs, max_steps=2, batch_size=8, progress=False)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert ce.score([(p.a, p.b) for p in pairs[:5]]).shape == (5,)


def test_finetune_bad_input(tiny):
    model, tok, pairs = tiny
    with pytest.raises(ValueError, match="empty string"):
        finetune_cosent(model, tok, pairs[:3] + [Pair("", "b", 1.0)], max_steps=1, progress=False)
