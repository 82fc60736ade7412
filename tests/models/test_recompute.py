"""Recompute (gradient checkpointing per block, kexue.models.base.Blocks): for every family and application the
gradients equal the plain model's (dropout on, the RNG state replayed), cached decoding and evaluation are
untouched, and the activation memory kept for the backward pass shrinks (measured and printed, not asserted)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kexue.layers import KVCache
from kexue.models import REGISTRY, Blocks, build_model, set_recompute
from tests.families_common import encoder_batch, sentences, tokenizer

CASES = [(name, app) for name, f in REGISTRY.items() for app in f.model.applications]
DROPOUT = 0.1


def model_of(family: str, application: str, layers: int = 2, hidden: int = 64, dropout: float = DROPOUT,
             seed: int = 0) -> nn.Module:
    vocab = tokenizer().vocab_size
    if family == "t5":
        config = dict(model_type="t5", vocab_size=vocab, d_model=hidden, d_kv=hidden // 4, d_ff=2 * hidden,
                      num_layers=layers, num_heads=4, dropout_rate=dropout)
    else:
        config = dict(model_type=family, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=512,
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        if "embedding_size" in getattr(REGISTRY[family].model, "hf_defaults", {}):
            config["embedding_size"] = hidden
        if family == "albert":  # shared blocks: 2 groups over 4 layers, each applied twice
            config.update(num_hidden_layers=2 * layers, num_hidden_groups=2)
    torch.manual_seed(seed)
    return build_model(config, application=application)


def inputs(n: int = 3, maxlen: int = 32):
    batch = encoder_batch(sentences(n))
    ids = batch["input_ids"][:, :maxlen]
    return ids, batch["segment_ids"][:, :maxlen], batch["attention_mask"][:, :maxlen]


def loss_of(model: nn.Module, ids, segments, mask) -> torch.Tensor:
    """A scalar touching every output (logits where the model has them, else the hidden states)."""
    if isinstance(model, Blocks) and hasattr(model, "encode") and hasattr(model, "decode"):  # T5
        out = model(ids, ids[:, :-1], mask, mask[:, :-1])
    else:
        result = model(ids, segments if model.segment_vocab_size() or model.application == "unilm" else None, mask)
        out = result.logits if result.logits is not None else result.hidden
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    return (out.float() * weights).sum()


def grads(model: nn.Module, recompute: bool, seed: int = 1) -> dict[str, torch.Tensor]:
    model.train()
    set_recompute(model, recompute)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss_of(model, *inputs()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family,application", CASES)
def test_recompute_gradients_equal_plain(family, application):
    model = model_of(family, application)
    plain, again = grads(model, False), grads(model, False, seed=2)
    assert any(not torch.equal(plain[n], again[n]) for n in plain), "dropout must be active in this test"
    checked = grads(model, True)
    assert plain.keys() == checked.keys() and plain
    for name in plain:
        torch.testing.assert_close(checked[name], plain[name], rtol=1e-6, atol=1e-6, msg=name)


class Counter:
    """Block calls that went through torch.utils.checkpoint."""

    def __init__(self, monkeypatch):
        import kexue.models.base as base

        self.calls = 0
        real = base.checkpoint

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(base, "checkpoint", counted)


@pytest.mark.parametrize("family,application", [("albert", "encoder"), ("t5", "seq2seq"), ("gau_alpha", "encoder"),
                                                ("bert", "unilm"), ("gpt", "lm")])
def test_recompute_checkpoints_each_block_only_in_training(family, application, monkeypatch):
    counter = Counter(monkeypatch)
    model = model_of(family, application)
    set_recompute(model)
    ids, segments, mask = inputs()
    model.train()
    loss_of(model, ids, segments, mask).backward()
    blocks = model.config.num_layers * 2 if family == "t5" else model.config.num_hidden_layers
    assert counter.calls == blocks  # ALBERT: every application of a shared block
    counter.calls = 0
    model.eval()
    with torch.no_grad():
        loss_of(model, ids, segments, mask)
    model.train()
    with torch.no_grad():
        loss_of(model, ids, segments, mask)
    assert counter.calls == 0


@pytest.mark.parametrize("family,application", [("bert", "lm"), ("gpt", "lm"), ("t5", "seq2seq"), ("gau_alpha", "lm"),
                                                ("albert", "lm"), ("nezha", "lm"), ("gpt2_ml", "lm")])
def test_cached_decoding_unaffected(family, application, monkeypatch):
    """Step-by-step decoding with a KV cache gives the same logits with recompute on, even in train mode
    (a cache is never checkpointed)."""
    counter = Counter(monkeypatch)
    ids = inputs(2)[0][:, :6]
    model = model_of(family, application, dropout=0.0)
    outs = []
    for on in (False, True):
        set_recompute(model, on)
        model.train()
        cache = KVCache()
        if family == "t5":
            with torch.no_grad():  # the encoder pass is not cached decoding
                enc = model.encode(ids)
            steps = [model.decode(ids[:, i:i + 1], enc, cache=cache) for i in range(ids.shape[1])]
        else:
            steps = [model(ids[:, i:i + 1], cache=cache).logits for i in range(ids.shape[1])]
        outs.append(torch.cat(steps, 1).detach())
    assert counter.calls == 0
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)


def test_set_recompute_reaches_wrapped_models_and_refuses_none():
    wrapper = nn.Sequential(model_of("bert", "encoder"))
    assert set_recompute(wrapper) == 1 and wrapper[0].recompute
    with pytest.raises(ValueError, match="recompute: Linear holds no kexue Transformer"):
        set_recompute(nn.Linear(2, 2))


def saved_bytes(model: nn.Module, recompute: bool, ids, segments, mask) -> int:
    """Bytes autograd keeps for the backward pass (saved tensors, deduplicated by storage) plus the block inputs
    a checkpoint holds."""
    model.train()
    set_recompute(model, recompute)
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    held = []
    hooks = []
    if recompute:
        blocks = [layer for attr in model.block_lists for layer in getattr(model, attr, [])] \
            if family_of(model) != "albert" else [layer for group in model.groups for layer in group]
        for layer in blocks:
            hooks.append(layer.register_forward_pre_hook(
                lambda m, args: held.append(args[0].untyped_storage().nbytes()) if torch.is_grad_enabled() else None))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_of(model, ids, segments, mask)
    finally:
        for h in hooks:
            h.remove()
    loss.backward()
    # the checkpoint's own forward runs its blocks once under no_grad-like hooks: count each block input once
    return sum(seen.values()) + (sum(held[: model.num_blocks()]) if recompute else 0)


def family_of(model) -> str:
    return getattr(model, "family", "")


@pytest.mark.parametrize("family,application", [("bert", "encoder"), ("gpt", "lm"), ("t5", "seq2seq"),
                                                ("gau_alpha", "encoder")])
def test_recompute_memory_printed(family, application):
    """Activation memory on a longer input (4 x 256 tokens, 4 blocks): printed, not asserted beyond 'less'."""
    model = model_of(family, application, layers=4, hidden=128)
    ids = torch.randint(5, tokenizer().vocab_size, (4, 256))
    segments, mask = torch.zeros_like(ids), torch.ones_like(ids)
    plain = saved_bytes(model, False, ids, segments, mask)
    checked = saved_bytes(model, True, ids, segments, mask)
    print(f"\n{family} {application}: activations kept for backward {plain / 2**20:.1f} MiB plain, "
          f"{checked / 2**20:.1f} MiB with recompute ({checked / plain:.0%})")
    assert checked < plain
