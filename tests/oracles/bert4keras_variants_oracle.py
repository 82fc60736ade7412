"""bert4keras 0.11.5 as the oracle of GPT2-ML, GAU-α and ``keep_tokens`` / ``compound_tokens``.

Runs inside ``.venv-bert4keras``, like ``bert4keras_oracle.py`` (whose helpers it imports):

    TF_KERAS=1 TF_USE_LEGACY_KERAS=1 .venv-bert4keras/bin/python bert4keras_variants_oracle.py INPUTS.npz OUT_DIR

* ``gpt2_ml`` / ``gpt2_ml_cond``: bert4keras's ``GPT2_ML`` (imcaspar/gpt2-ml's layout), plain and with
  Conditional LayerNorm;
* ``gau_alpha`` / ``gau_alpha_lm`` / ``gau_alpha_unilm``: GAU-α (《GAU-α：尝鲜体验快好省的下一代Attention》),
  bert4keras's ``RoFormerV2`` with every layer a ``GatedAttentionUnit`` (softmax_plus, RoPE on the shared
  q/k projection, no bias) followed by the gain-free RMS norm, as the GAU-α release defines it on top of
  bert4keras >= 0.11.2 (the class is written out below: bert4keras 0.11.5 ships the layer, not the model;
  its TF names are the release's, ``GAU_alpha/encoder/layer_<i>/gau/{i_dense,o_dense}/kernel`` and
  ``.../{q,k}_scaleoffset/gamma``);
* ``gau_decode``: SimBERT-style UniLM decoding of a GAU-α (beam search with topk 4 and topk 1);
* ``*_keep``: a model saved with its full vocabulary, then built by bert4keras with ``keep_tokens`` and
  ``compound_tokens`` from that checkpoint (bert with MLM: embedding and MLM bias rows; T5 v1.1: the shared
  embedding and the decoder's logits kernel; GPT2-ML: its embedding). ``OUT_DIR/<name>/keep_tokens.json`` and
  ``compound_tokens.json`` are the files ``kexue convert bert4keras`` reads; the outputs are bert4keras's on
  the inputs re-expressed in the kept vocabulary (``outputs.npz``: ``ids``, ``segs``, ... as fed).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bert4keras_oracle import (UniLMGenerator, base_config, build, layer_output, predict,  # noqa: E402
                               randomize)

import numpy as np  # noqa: E402
from bert4keras.backend import K  # noqa: E402
from bert4keras.layers import Add, Dropout, GatedAttentionUnit, LayerNormalization  # noqa: E402
from bert4keras.models import RoFormerV2, build_transformer_model  # noqa: E402


class GAU_alpha(RoFormerV2):
    """GAU-α: RoFormerV2 whose layers are x = RMSNorm(x + GAU(x)); GAU with ``intermediate_size`` units,
    ``attention_key_size`` key size, ``hidden_act``, no bias, softmax_plus normalisation and RoPE; TF
    names under ``GAU_alpha/encoder/layer_<i>/gau/``."""

    def apply_main_layers(self, inputs, index):
        name = "Transformer-%d-GatedAttentionUnit" % index
        mask = self.compute_attention_bias(index)
        xi, x = inputs, [inputs, self.compute_position_bias(inputs)]
        arguments = {"a_bias": None, "p_bias": "rotary"}
        if mask is not None:
            arguments["a_bias"] = True
            x.insert(1, mask)
        x = self.apply(inputs=x, layer=GatedAttentionUnit, arguments=arguments, units=self.intermediate_size,
                       key_size=self.attention_key_size, activation=self.hidden_act, use_bias=False,
                       normalization="softmax_plus", attention_dropout=self.attention_dropout_rate,
                       kernel_initializer=self.initializer, name=name)
        x = self.apply(inputs=x, layer=Dropout, rate=self.dropout_rate, name="%s-Dropout" % name)
        x = self.apply(inputs=[xi, x], layer=Add, name="%s-Add" % name)
        return self.apply(inputs=x, layer=LayerNormalization, zero_mean=False, scale=False, offset=False,
                          name="%s-Norm" % name)

    def variable_mapping(self):
        """The release's names, listed in the order of each layer's weights: under tf-keras a
        GatedAttentionUnit holds [i_dense, q_scaleoffset, k_scaleoffset, o_dense] (the order its sublayers
        are built in), which bert4keras zips with the names, so the names follow the weights themselves."""
        mapping = {"Embedding-Token": ["bert/embeddings/word_embeddings"],
                   "Embedding-Segment": ["bert/embeddings/token_type_embeddings"]}
        for i in range(self.num_hidden_layers):
            layer = self.layers[self.prefixed("Transformer-%d-GatedAttentionUnit" % i)]
            names = {id(layer.i_dense.kernel): "i_dense/kernel", id(layer.o_dense.kernel): "o_dense/kernel",
                     id(layer.q_scaleoffset.gamma): "q_scaleoffset/gamma",
                     id(layer.k_scaleoffset.gamma): "k_scaleoffset/gamma"}
            mapping["Transformer-%d-GatedAttentionUnit" % i] = [
                "GAU_alpha/encoder/layer_%d/gau/%s" % (i, names[id(w)]) for w in layer.trainable_weights]
        return mapping


def gau_config(vocab):
    return base_config(vocab, hidden_act="swish", intermediate_size=96, attention_key_size=24)


def main():
    inputs_path, out_dir = sys.argv[1], sys.argv[2]
    data = dict(np.load(inputs_path))
    vocab = int(data["vocab_size"])
    rng = np.random.RandomState(1)
    manifest = {}
    ids, segs, pair = data["ids"], data["segs"], [data["pair_ids"], data["pair_segs"]]

    def record(name, model, application, flags, arrays, config):
        np.savez(os.path.join(out_dir, name, "outputs.npz"), **arrays)
        manifest[name] = {"model": model, "application": application, "flags": flags, "config": config}

    def variant(name, model, application, flags, feed, config, last, build_app=None, **kwargs):
        t, _ = build(name, GAU_alpha if model == "gau_alpha" else model, build_app or application, config, vocab,
                     out_dir, rng, **kwargs)
        hidden, probs = predict(t.model.inputs, [layer_output(t, last), t.model.outputs[0]], feed)
        record(name, model, application, flags, {"hidden": hidden, "probs": probs}, config)
        return t

    # GPT2-ML: embeddings normed, then x += Attn(x); x = LN(x + FFN(LN(x))); token ids only.
    gcfg = base_config(vocab)
    variant("gpt2_ml", "gpt2_ml", "lm", [], [ids], gcfg, "Transformer-1-FeedForward-Norm-1", build_app="encoder")
    cond = data["cond"]
    variant("gpt2_ml_cond", "gpt2_ml", "lm", ["--cond-hidden-act", "relu"], [ids[:3], cond], gcfg,
            "Transformer-1-FeedForward-Norm-1", build_app="encoder", cond_dim=cond.shape[1],
            layer_norm_cond_hidden_size=16, layer_norm_cond_hidden_act="relu")
    # GAU-α as an MLM encoder (sequences up to 44 tokens: softmax_plus's log n scale past its floor of 16),
    # as a causal LM and as UniLM.
    last = "Transformer-1-GatedAttentionUnit-Norm"
    variant("gau_alpha", "gau_alpha", "encoder", ["--with-mlm"], [data["long_ids"], data["long_segs"]],
            gau_config(vocab), last, with_mlm=True)
    variant("gau_alpha_lm", "gau_alpha", "lm", [], [ids, segs], gau_config(vocab), last)
    variant("gau_alpha_unilm", "gau_alpha", "unilm", [], pair, gau_config(vocab), last)
    gau_decoding(data, vocab, out_dir, rng, record)
    keep_variants(data, vocab, out_dir, rng, record)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def gau_decoding(data, vocab, out_dir, rng, record):
    """bert4keras's AutoRegressiveDecoder over a GAU-α UniLM: beam search (topk 4, and topk 1) with the end
    token its greedy continuations produce most often (as bert4keras_oracle.decoding chooses it)."""
    cfg = gau_config(vocab)
    t, _ = build("gau_decode", GAU_alpha, "unilm", cfg, vocab, out_dir, rng)
    maxlen, arrays = 12, {}
    rows = [(r[r > 0], s[r > 0]) for r, s in zip(data["gen_ids"], data["gen_segs"])]
    endless = UniLMGenerator(t.model, start_id=None, end_id=-1, maxlen=maxlen)
    counts = {}
    for x, s in rows:
        for token in endless.random_sample([x, s], 1, topk=1)[0][2:].tolist():
            counts[token] = counts.get(token, 0) + 1
    end_id = min(counts, key=lambda k: (-counts[k], k))
    arrays["end_id"] = np.array(end_id)
    ended = UniLMGenerator(t.model, start_id=None, end_id=end_id, maxlen=maxlen)
    ended_min = UniLMGenerator(t.model, start_id=None, end_id=end_id, maxlen=maxlen, minlen=4)
    for i, (x, s) in enumerate(rows):
        arrays[f"beam_{i}"] = ended.beam_search([x, s], topk=4)
        arrays[f"beam_noend_{i}"] = endless.beam_search([x, s], topk=4)
        arrays[f"top1_{i}"] = ended.beam_search([x, s], topk=1)
        arrays[f"top1_min_{i}"] = ended_min.beam_search([x, s], topk=1, min_ends=2)
    record("gau_decode", "gau_alpha", "unilm", [], arrays, cfg)


def _keep_lists(used, vocab, rng):
    """keep_tokens: the 5 special tokens first, then every id the inputs use and 40 others, shuffled;
    compound_tokens over kept ids (bert4keras indexes them in the kept table): a plain list (uniform
    weights) and two (ids, weights) items, written as {"ids", "weights"} objects."""
    rest = sorted(set(int(i) for i in used) - set(range(5)))
    others = [i for i in rng.permutation(vocab).tolist() if i >= 5 and i not in rest][:40]
    tail = rest + others
    rng.shuffle(tail)
    keep = list(range(5)) + tail
    compound = [[7, 11], {"ids": [5, 9, 30], "weights": [1.0, 2.0, 0.5]}, {"ids": [12, 12, 40], "weights": [3, 1, 1]}]
    return keep, compound


def _as_bert4keras(compound):
    return [(c["ids"], c["weights"]) if isinstance(c, dict) else c for c in compound]


def _remap(arr, keep, compound_ids, rng):
    """Inputs in the kept vocabulary, with a few tokens replaced by compound tokens (so their rows are read)."""
    where = {old: new for new, old in enumerate(keep)}
    out = np.vectorize(lambda i: where[int(i)])(arr).astype(arr.dtype)
    for r in range(out.shape[0]):
        real = np.nonzero(out[r] > 4)[0]
        for j, c in zip(real[1:4], compound_ids):
            out[r, j] = c
    return out


def keep_variants(data, vocab, out_dir, rng, record):
    used = np.concatenate([data[k].ravel() for k in ("ids", "t5_enc", "t5_dec")])
    keep, compound = _keep_lists(used, vocab, rng)
    n = len(keep)
    cids = list(range(n, n + len(compound)))

    def write_lists(name):
        folder = os.path.join(out_dir, name)
        for fname, value in (("keep_tokens.json", keep), ("compound_tokens.json", compound)):
            with open(os.path.join(folder, fname), "w") as f:
                json.dump(value, f)
        return ["--keep-tokens", "{dir}/keep_tokens.json", "--compound-tokens", "{dir}/compound_tokens.json"]

    def kept(name, model, config, **kwargs):
        return build_transformer_model(os.path.join(out_dir, name, "bert_config.json"),
                                       os.path.join(out_dir, name, "model.ckpt"), model=model, keep_tokens=keep,
                                       compound_tokens=_as_bert4keras(compound), return_keras_model=False, **kwargs)

    cfg = base_config(vocab)
    build("bert_keep", "bert", "encoder", cfg, vocab, out_dir, rng, with_mlm=True)
    flags = write_lists("bert_keep")
    t = kept("bert_keep", "bert", cfg, with_mlm=True)
    k_ids, k_segs = _remap(data["ids"], keep, cids, rng), data["segs"]
    hidden, probs = predict(t.model.inputs, [layer_output(t, "Transformer-1-FeedForward-Norm"), t.model.outputs[0]],
                            [k_ids, k_segs])
    record("bert_keep", "bert", "encoder", ["--with-mlm"] + flags,
           {"hidden": hidden, "probs": probs, "ids": k_ids, "segs": k_segs}, cfg)

    build("gpt2_ml_keep", "gpt2_ml", "encoder", cfg, vocab, out_dir, rng)
    flags = write_lists("gpt2_ml_keep")
    t = kept("gpt2_ml_keep", "gpt2_ml", cfg)
    hidden, probs = predict(t.model.inputs, [layer_output(t, "Transformer-1-FeedForward-Norm-1"),
                                             t.model.outputs[0]], [k_ids])
    record("gpt2_ml_keep", "gpt2_ml", "lm", flags, {"hidden": hidden, "probs": probs, "ids": k_ids}, cfg)

    tcfg = base_config(vocab, hidden_act=["gelu", "linear"])
    build("t5_keep", "t5.1.1", "encoder", tcfg, vocab, out_dir, rng)
    flags = write_lists("t5_keep")
    t = kept("t5_keep", "t5.1.1", tcfg)
    enc, dec = _remap(data["t5_enc"], keep, cids, rng), _remap(data["t5_dec"], keep, cids, rng)
    (h,) = predict(t.encoder.inputs, [t.encoder.output], [enc])
    (probs,) = predict(t.model.inputs, [t.model.output], [enc, dec])
    record("t5_keep", "t5.1.1", "encoder", flags, {"hidden": h, "probs": probs, "enc": enc, "dec": dec}, tcfg)


if __name__ == "__main__":
    K.set_floatx("float32")
    main()
