"""rule="bert4keras" equals a line-by-line numpy transcription of bert4keras 0.11.5's
``AutoRegressiveDecoder`` (``beam_search``, ``random_sample``, the ``wraps`` predict decorator) driving
the same model by full recomputation, one input at a time; kexue decodes the inputs as one left-padded
ragged batch with Conditional-LayerNorm vectors and a KV cache. The model is a UniLM BERT partly
trained on real title -> first-line pairs of Tang poems, so sequences end at [SEP] at varied lengths."""
import numpy as np
import pytest
import torch

from kexue.data.shipped import poems
from kexue.generation import beam_search, decoding_state, sample, top_k_top_p_filter
from generation_common import left_pad, one_thread, train_unilm  # noqa: F401,E402  (autouse fixture)

COND = 8


# ---- bert4keras 0.11.5 snippets.py, transcribed (numpy only) ---------------------------------------
def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Decoder:
    """AutoRegressiveDecoder(start_id=None, end_id, maxlen, minlen) with a SimBERT-style predict
    (``@wraps(default_rtype='probas')``: token_ids + output_ids, segment 1 for the outputs)."""

    def __init__(self, model, end_id, maxlen, minlen):
        self.model, self.end_id, self.maxlen, self.minlen = model, end_id, maxlen, minlen
        self.first_output_ids = np.empty((1, 0), dtype=int)

    def raw_predict(self, inputs, output_ids):
        token_ids, segment_ids, cond = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        with torch.no_grad():
            logits = self.model(torch.from_numpy(token_ids), torch.from_numpy(segment_ids),
                                cond=torch.from_numpy(cond)).logits[:, -1].numpy()
        return softmax(logits)  # the model's output layer: probabilities, float32

    def predict(self, inputs, output_ids, states, temperature=1, rtype="probas"):
        prediction = (self.raw_predict(inputs, output_ids), None)
        if temperature != 1:
            probas = np.power(prediction[0], 1.0 / temperature)
            probas = probas / probas.sum(axis=-1, keepdims=True)
            prediction = (probas, prediction[1])
        if rtype == "probas":
            return prediction
        return np.log(prediction[0] + 1e-12), prediction[1]

    def beam_search(self, inputs, topk, states=None, temperature=1, min_ends=1):
        inputs = [np.array([i]) for i in inputs]
        output_ids, output_scores = self.first_output_ids, np.zeros(1)
        for step in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, temperature, "logits")
            if step == 0:
                inputs = [np.repeat(i, topk, axis=0) for i in inputs]
            scores = output_scores.reshape((-1, 1)) + scores
            indices = scores.argpartition(-topk, axis=None)[-topk:]
            indices_1 = indices // scores.shape[1]
            indices_2 = (indices % scores.shape[1]).reshape((-1, 1))
            output_ids = np.concatenate([output_ids[indices_1], indices_2], 1)
            output_scores = np.take_along_axis(scores, indices, axis=None)
            is_end = output_ids[:, -1] == self.end_id
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                best = output_scores.argmax()
                if is_end[best] and end_counts[best] >= min_ends:
                    return output_ids[best]
                else:
                    flag = ~is_end | (end_counts < min_ends)
                    if not flag.all():
                        inputs = [i[flag] for i in inputs]
                        output_ids = output_ids[flag]
                        output_scores = output_scores[flag]
                        end_counts = end_counts[flag]
                        topk = flag.sum()
        return output_ids[output_scores.argmax()]

    def random_sample(self, inputs, n, topk=None, topp=None, states=None, temperature=1, min_ends=1):
        inputs = [np.array([i]) for i in inputs]
        output_ids = self.first_output_ids
        results = []
        for step in range(self.maxlen):
            probas, states = self.predict(inputs, output_ids, states, temperature, "probas")
            probas /= probas.sum(axis=1, keepdims=True)
            if step == 0:
                probas = np.repeat(probas, n, axis=0)
                inputs = [np.repeat(i, n, axis=0) for i in inputs]
                output_ids = np.repeat(output_ids, n, axis=0)
            probas, k_indices, p_indices = filter_probas(probas, topk, topp)
            sample_ids = np.apply_along_axis(lambda p: np.random.choice(len(p), p=p), 1, probas).reshape((-1, 1))
            if topp is not None:
                sample_ids = np.take_along_axis(p_indices, sample_ids, axis=1)
            if topk is not None:
                sample_ids = np.take_along_axis(k_indices, sample_ids, axis=1)
            output_ids = np.concatenate([output_ids, sample_ids], 1)
            is_end = output_ids[:, -1] == self.end_id
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                flag = is_end & (end_counts >= min_ends)
                if flag.any():
                    for ids in output_ids[flag]:
                        results.append(ids)
                    flag = (flag == False)  # noqa: E712  (as written in bert4keras)
                    inputs = [i[flag] for i in inputs]
                    output_ids = output_ids[flag]
                    end_counts = end_counts[flag]
                    if len(output_ids) == 0:
                        break
        for ids in output_ids:
            results.append(ids)
        return results


def filter_probas(probas, topk, topp):
    """random_sample's top-k then top-p filtering (probabilities in sorted / top-k coordinates)."""
    k_indices = p_indices = None
    if topk is not None:
        k_indices = probas.argpartition(-topk, axis=1)[:, -topk:]
        probas = np.take_along_axis(probas, k_indices, axis=1)
        probas /= probas.sum(axis=1, keepdims=True)
    if topp is not None:
        p_indices = probas.argsort(axis=1)[:, ::-1]
        probas = np.take_along_axis(probas, p_indices, axis=1)
        cumsum_probas = np.cumsum(probas, axis=1)
        flag = np.roll(cumsum_probas >= topp, 1, axis=1)
        flag[:, 0] = False
        probas[flag] = 0
        probas /= probas.sum(axis=1, keepdims=True)
    return probas, k_indices, p_indices


# ---- the model and inputs -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    pairs = [(p.title, p.text.split("\n")[0]) for p in poems("tang300")[:32]]
    model, tok = train_unilm(pairs, hidden=32, steps=40, cond_dim=COND)  # partly trained: peaked, not certain
    with torch.no_grad():  # the condition must matter
        for name, p in model.named_parameters():
            if ".cond_" in name:
                p.normal_(0, 0.05)
    sources = [tok.encode(pairs[i][0])[0] for i in (1, 2, 3, 5)]  # titles of different lengths
    conds = torch.randn(len(sources), COND, generator=torch.Generator().manual_seed(1))
    return model, tok, sources, conds


def strip_end(ids, end):
    ids = [int(i) for i in ids]
    return ids[:-1] if ids and ids[-1] == end else ids


def numpy_inputs(src, cond):
    return [np.array(src), np.zeros(len(src), dtype=np.int64), cond.numpy()]


# ---- tests -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("topk,minlen,min_ends,temperature", [(3, 0, 1, 1.0), (3, 4, 2, 1.0), (2, 1, 1, 0.7),
                                                               (4, 6, 1, 1.3)])
def test_beam_search_equals_bert4keras(trained, topk, minlen, min_ends, temperature):
    model, tok, sources, conds = trained
    end, maxlen = tok.sep_id, 16
    ids, mask = left_pad(sources)
    got = beam_search(decoding_state(model, ids, mask, cond=conds), maxlen, end, topk, minlen, rule="bert4keras",
                      temperature=temperature, min_ends=min_ends)
    want = [strip_end(Decoder(model, end, maxlen, minlen).beam_search(numpy_inputs(s, c), topk,
                                                                      temperature=temperature, min_ends=min_ends), end)
            for s, c in zip(sources, conds)]
    assert got == want
    assert len({len(w) for w in want}) > 1  # rows end at different lengths


@pytest.mark.parametrize("minlen,min_ends,temperature", [(0, 1, 1.0), (5, 1, 1.0), (3, 2, 0.7)])
def test_one_beam_is_bert4keras_topk1(trained, minlen, min_ends, temperature):
    """``generate(num_beams=1, rule="bert4keras")``: bert4keras's ``beam_search(topk=1)`` (an end token
    before minlen does not stop the row; min_ends), not HF greedy decoding (which forbids it)."""
    from kexue.generation import generate

    model, tok, sources, conds = trained
    end, maxlen = tok.sep_id, 16
    ids, mask = left_pad(sources)
    got = generate(model, ids, mask, cond=conds, max_new_tokens=maxlen, eos_id=end, num_beams=1, rule="bert4keras",
                   min_new_tokens=minlen, min_ends=min_ends, temperature=temperature)
    want = [strip_end(Decoder(model, end, maxlen, minlen).beam_search(numpy_inputs(s, c), 1, temperature=temperature,
                                                                      min_ends=min_ends), end)
            for s, c in zip(sources, conds)]
    assert got == want
    if minlen or min_ends > 1:
        hf = generate(model, ids, mask, cond=conds, max_new_tokens=maxlen, eos_id=end, min_new_tokens=minlen)
        assert hf != got or any(end in row for row in got)  # a rule of its own on these inputs


def test_bert4keras_rule_differs_from_hf(trained):
    """The two rules are not the same search: on these inputs at least one answer differs."""
    model, tok, sources, conds = trained
    ids, mask = left_pad(sources)
    run = lambda rule: beam_search(decoding_state(model, ids, mask, cond=conds), 16, tok.sep_id, 3, rule=rule)  # noqa
    assert run("hf") != run("bert4keras")


@pytest.mark.parametrize("minlen,min_ends", [(0, 1), (5, 1), (3, 2)])
def test_top1_sampling_equals_bert4keras(trained, minlen, min_ends):
    """topk=1 makes both samplers deterministic: the stopping rule (minlen, min_ends) is what is compared."""
    model, tok, sources, conds = trained
    end, maxlen, n = tok.sep_id, 14, 2
    ids, mask = left_pad(sources)
    got = sample(decoding_state(model, ids, mask, cond=conds), maxlen, end, minlen, n=n, top_k=1, rule="bert4keras",
                 min_ends=min_ends)
    want = []
    for s, c in zip(sources, conds):
        res = Decoder(model, end, maxlen, minlen).random_sample(numpy_inputs(s, c), n, topk=1, min_ends=min_ends)
        want += sorted(strip_end(r, end) for r in res)
    assert got == want
    if min_ends == 2:
        assert any(end in row for row in got)  # an earlier end token stays in the result


@pytest.mark.parametrize("topk,topp", [(None, 0.3), (None, 0.8), (None, 0.95), (5, None), (20, 0.9), (1, 0.5)])
def test_sampling_filter_equals_bert4keras(topk, topp):
    """Same candidate set and renormalised probabilities as random_sample's top-k / top-p filter."""
    rng = np.random.default_rng(0)
    probas = rng.dirichlet(np.full(40, 0.3), size=16).astype(np.float32)
    filt, k_idx, p_idx = filter_probas(probas.copy(), topk, topp)
    full = np.zeros_like(probas)
    idx = np.arange(40)[None].repeat(16, 0)
    if topk is not None:
        idx = k_idx
    if topp is not None:
        idx = np.take_along_axis(idx, p_idx, axis=1)
    np.put_along_axis(full, idx, filt, axis=1)
    ours = top_k_top_p_filter(torch.log(torch.from_numpy(probas)), topk, topp).softmax(-1).numpy()
    assert ((full > 0) == (ours > 0)).all()
    np.testing.assert_allclose(ours, full, atol=1e-6)
