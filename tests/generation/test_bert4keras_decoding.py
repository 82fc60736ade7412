"""SimBERT-style UniLM decoding against bert4keras's own ``AutoRegressiveDecoder`` on the same weights.

bert4keras builds a UniLM BERT with random weights, saves a TF checkpoint and decodes real sentences
(source = segment 0, generated tokens = segment 1, no start token, maxlen 12); ``kexue convert
bert4keras`` converts the checkpoint. A random model puts [SEP] first or never, so the end token is
the one its greedy continuations produce most often (chosen by the oracle): hypotheses end at varied
lengths, which is what the end-token rules act on.

What is compared:

* Beam search, ``rule="bert4keras"`` (sum of log-probs, the beam shrinks as hypotheses end, the search
  returns as soon as the best candidate has ended): the same tokens as bert4keras's ``beam_search``.
* Beam search, HF's rule (2·K candidates, finished hypotheses scored sum(log p) / len^α): it agrees
  with bert4keras's when no hypothesis can end early — end token disabled (bert4keras ``end_id=-1``,
  kexue ``eos_id=None``), so both keep the K best sums of log-probs for exactly ``maxlen`` steps and
  return the best; ``length_penalty`` is then irrelevant (all hypotheses have one length), 0.0 here.
  With end tokens the two rules differ by design (bert4keras returns the first best-ended candidate).
* Sampling, top-k = 1: the degenerate sampler is deterministic; bert4keras's ``random_sample`` and
  kexue's ``sample(top_k=1)`` give the same tokens.
* Sampling, top-k = 5: the random draws cannot be shared (numpy's ``np.random.choice`` vs torch's
  ``multinomial``), so the sampler's law is compared instead, on the path bert4keras sampled: at
  every step kexue's decoding state (KV cache, UniLM segments) is fed bert4keras's sampled tokens and
  its next-token distribution, its top-5 support and the renormalised top-5 probabilities it samples
  from must equal bert4keras's (<= 1e-5), and bert4keras's drawn token lies in that support.
"""
from __future__ import annotations

import numpy as np
import torch

from bert4keras_common import oracle, report  # noqa: F401  (oracle is a fixture)
from kexue.generation import decoding_state, generate, sample, top_k_top_p_filter
from kexue.models import build_model

MAXLEN, BEAMS = 12, 4


def _setup(oracle):
    folder, converted, data = oracle
    model = build_model(checkpoint=converted / "unilm_decode").eval()
    expected = np.load(folder / "unilm_decode" / "outputs.npz")
    rows = [(r[r > 0], s[r > 0]) for r, s in zip(data["gen_ids"], data["gen_segs"])]
    return model, expected, rows, int(expected["end_id"])


def _cut(ids: np.ndarray, end: int) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[: ids.index(end)] if end in ids else ids


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.long)[None]


def test_beam_search_bert4keras_rule(oracle):
    model, expected, rows, end = _setup(oracle)
    ends = []
    for i, (x, s) in enumerate(rows):
        (ours,) = generate(model, _t(x), segment_ids=_t(s), max_new_tokens=MAXLEN, eos_id=end, num_beams=BEAMS,
                           rule="bert4keras")
        theirs = expected[f"beam_{i}"]
        ends.append(int(theirs[-1]) == end)
        assert ours == _cut(theirs, end), (i, ours, theirs.tolist())
    assert any(ends), "no bert4keras hypothesis ended: the end-token rule was not exercised"


def test_beam_search_hf_rule_without_end(oracle):
    model, expected, rows, _ = _setup(oracle)
    for i, (x, s) in enumerate(rows):
        (ours,) = generate(model, _t(x), segment_ids=_t(s), max_new_tokens=MAXLEN, eos_id=None, num_beams=BEAMS,
                           length_penalty=0.0)
        theirs = expected[f"beam_noend_{i}"].tolist()
        assert len(theirs) == MAXLEN and ours == theirs, (i, ours, theirs)


def test_top1_sampling(oracle):
    model, expected, rows, end = _setup(oracle)
    for i, (x, s) in enumerate(rows):
        ours = generate(model, _t(x), segment_ids=_t(s), max_new_tokens=MAXLEN, eos_id=end, do_sample=True,
                        top_k=1, n=2, generator=torch.Generator().manual_seed(0))
        theirs = [_cut(r, end) for r in expected[f"top1_{i}"]]
        assert ours == theirs, (i, ours, theirs)


def test_topk_sampling_distribution(oracle):
    model, expected, rows, end = _setup(oracle)
    worst = 0.0
    for i, (x, s) in enumerate(rows):
        path = [int(t) for t in expected[f"topk_{i}"]]
        their_probs = expected[f"topk_probs_{i}"]  # [steps, V]: bert4keras's distribution at each step
        assert len(path) == their_probs.shape[0]
        state = decoding_state(model, _t(x), segment_ids=_t(s))
        with torch.inference_mode():
            logits = state.prefill()
            for step, token in enumerate(path):
                probs = logits.float().softmax(-1)[0].double().numpy()
                ours = top_k_top_p_filter(logits.float(), top_k=5).softmax(-1)[0].double().numpy()
                support = set(np.flatnonzero(ours).tolist())
                theirs = their_probs[step].astype(np.float64)
                their_support = np.argpartition(theirs, -5)[-5:]
                their_top = theirs[their_support] / theirs[their_support].sum()
                assert support == set(their_support.tolist()), (i, step)
                assert token in support, (i, step, token)
                worst = max(worst, float(np.abs(probs - theirs).max()),
                            float(np.abs(ours[their_support] - their_top).max()))
                if step + 1 < len(path):
                    logits = state.step(torch.tensor([token]))
    report("unilm top-5 sampling law", max_prob_diff=worst)
    assert worst <= 1e-5
    # and kexue's own top-5 sampler stays inside that support from the first step
    x, s = rows[0]
    draws = sample(decoding_state(model, _t(x), segment_ids=_t(s)), 1, end, n=8, top_k=5,
                   generator=torch.Generator().manual_seed(0))
    first = expected["topk_probs_0"][0]
    assert {d[0] for d in draws if d} <= set(np.argpartition(first, -5)[-5:].tolist())
