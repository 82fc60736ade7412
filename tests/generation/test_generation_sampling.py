"""Sampling: reproducible with a seeded generator; top-k / top-p never leave their sets (checked on the
logits the model produced); streaming yields the same tokens as the batch call."""
import torch

from kexue.generation import decoding_state, greedy, sample, stream, top_k_top_p_filter
from kexue.models.gpt import GPT, gpt2_config
from generation_common import one_thread  # noqa: F401,E402  (autouse fixture)

VOCAB = 50


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    cfg = gpt2_config(dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0,
                           attn_pdrop=0.0))
    return GPT(cfg).eval()


class Recorder:
    """Wraps a decoding state and keeps every logits row it hands to the search."""

    def __init__(self, state):
        self.state, self.logits = state, []

    def prefill(self):
        out = self.state.prefill()
        self.logits.append(out)
        return out

    def step(self, tokens):
        out = self.state.step(tokens)
        self.logits.append(out)
        return out

    def reorder(self, index):
        self.state.reorder(index)
        self.logits[-1] = self.logits[-1].index_select(0, index)


def test_seeded_sampling_is_reproducible():
    model = tiny_gpt()
    ids = torch.randint(0, VOCAB, (2, 5))
    run = lambda seed: sample(decoding_state(model, ids), 12, n=3, top_p=0.95,  # noqa: E731
                              generator=torch.Generator().manual_seed(seed))
    a, b, c = run(1), run(1), run(2)
    assert a == b and a != c
    assert len(a) == 6 and len({tuple(r) for r in a}) > 1  # n samples per input, and they differ


def test_top_k_never_leaves_the_top_k():
    model = tiny_gpt()
    ids = torch.randint(0, VOCAB, (3, 4))
    rec = Recorder(decoding_state(model, ids))
    k = 3
    steps = list(stream(rec, 20, do_sample=True, top_k=k, n=2, temperature=2.0,
                        generator=torch.Generator().manual_seed(0)))
    assert len(steps) == 20
    for tokens, logits in zip(steps, rec.logits):
        allowed = torch.topk(logits, k, dim=-1).indices
        assert (allowed == tokens[:, None]).any(-1).all()


def test_top_p_filter_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_k_top_p_filter(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(top_k_top_p_filter(logits, top_p=0.8))  # 0.5 + 0.3 reaches 0.8
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(top_k_top_p_filter(logits, top_k=1, top_p=0.99))
    assert kept.tolist() == [[True, False, False, False]]


def test_stream_equals_greedy_and_respects_min_length():
    model = tiny_gpt()
    ids = torch.randint(0, VOCAB, (2, 6))
    streamed = torch.stack(list(stream(decoding_state(model, ids), 10)), 1).tolist()
    assert streamed == greedy(decoding_state(model, ids), 10)
    eos = streamed[0][0]  # the first greedy token: forbidden before 4 tokens
    out = greedy(decoding_state(model, ids), 10, eos_id=eos, min_new_tokens=4)
    assert len(out[0]) >= 4
