"""bert4keras 0.11.5 as the oracle of ALBERT, NEZHA, ELECTRA and RoBERTa: random weights, real TF
checkpoints, predictions and UniLM beam search, as ``bert4keras_oracle.py`` does for the other models
(whose helpers it reuses) but cached on its own, so neither oracle reruns when the other changes.

    TF_KERAS=1 TF_USE_LEGACY_KERAS=1 .venv-bert4keras/bin/python bert4keras_encoders_oracle.py INPUTS.npz OUT_DIR

Variants (``OUT_DIR/<name>/``: ``bert_config.json``, ``model.ckpt*``, ``outputs.npz``; ``manifest.json``):

* ``albert``: shared layers, embedding_size 32 < hidden 64 (Embedding-Mapping), pooler + MLM head;
  ``albert_unilm``: UniLM, plus beam search; ``albert_cond``: Conditional LayerNorm in the shared layers.
* ``albert_unshared``: bert4keras's unshared variant with its own random weights per layer. Its
  ``save_weights_as_checkpoint`` writes every layer under the one ALBERT name, so TensorFlow makes the
  names unique (``.../kernel``, ``.../kernel_1``, ...), layer i holding suffix ``_i``.
  ``albert_unshared_from_albert``: bert4keras's own use of it, ``albert``'s shared checkpoint loaded into
  the unshared model (every layer reads the shared variables).
* ``nezha``: functional relative positions (bert4keras hard-codes max_relative_position = 64), pooler +
  MLM; also predicted on ``nezha_long_ids`` (real sentences joined, > 64 tokens, so the clipping acts);
  ``nezha_lm`` (causal), ``nezha_unilm`` (plus beam search).
* ``electra``: discriminator body with embedding_size 32 (``electra/embeddings_project``), hidden
  states only; ``electra_disc``: ``with_discriminator=True`` (sigmoid probabilities ``[B, L, 1]``).
* ``roberta``: bert4keras's ``roberta`` (BERT computation under that name), pooler + MLM.
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert4keras_oracle import (LAYERS, UniLMGenerator, base_config, build, build_transformer_model,  # noqa: E402
                               predict)

MAXLEN, BEAMS = 12, 4


def hidden_of(t, shared=False):
    """The last layer's output; a shared ALBERT layer has one output per call, the last is wanted."""
    name = "Transformer-FeedForward-Norm" if shared else "Transformer-%d-FeedForward-Norm" % (LAYERS - 1)
    layer = t.model.get_layer(t.prefixed(name))
    return layer.get_output_at(LAYERS - 1) if shared else layer.output


def long_rows(data, length=80):
    """Real sentences (padding removed) joined into rows of up to ``length`` tokens, right-padded."""
    pieces = [r[r > 0] for key in ("long_ids", "pair_ids", "ids") for r in data[key]]
    flat = np.concatenate(pieces)
    rows = [flat[:length], flat[length: 2 * length - 9]]
    ids = np.zeros((2, length), dtype=np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    segs = np.zeros_like(ids)
    segs[:, 40:] = 1
    segs[ids == 0] = 0
    return ids, segs


def beams(t, data, arrays):
    """bert4keras's UniLM beam search on the gen rows (as bert4keras_oracle.decoding): the end token is the
    one greedy continuations produce most often, so hypotheses end at varied lengths."""
    rows = [(r[r > 0], s[r > 0]) for r, s in zip(data["gen_ids"], data["gen_segs"])]
    endless = UniLMGenerator(t.model, start_id=None, end_id=-1, maxlen=MAXLEN)
    counts = {}
    for x, s in rows:
        for token in endless.random_sample([x, s], 1, topk=1)[0][2:].tolist():
            counts[token] = counts.get(token, 0) + 1
    end_id = min(counts, key=lambda k: (-counts[k], k))
    ended = UniLMGenerator(t.model, start_id=None, end_id=end_id, maxlen=MAXLEN)
    arrays["end_id"] = np.array(end_id)
    for i, (x, s) in enumerate(rows):
        arrays[f"beam_{i}"] = ended.beam_search([x, s], topk=BEAMS)
        arrays[f"beam_noend_{i}"] = endless.beam_search([x, s], topk=BEAMS)


def main():
    inputs_path, out_dir = sys.argv[1], sys.argv[2]
    data = dict(np.load(inputs_path))
    vocab = int(data["vocab_size"])
    rng = np.random.RandomState(1)
    manifest = {}
    single, pair = [data["ids"], data["segs"]], [data["pair_ids"], data["pair_segs"]]

    def record(name, model, application, flags, arrays, config):
        np.savez(os.path.join(out_dir, name, "outputs.npz"), **arrays)
        manifest[name] = {"model": model, "application": application, "flags": flags, "config": config}

    def variant(name, model, application, feed, config, shared=False, cond_dim=None, **kwargs):
        """Build and save with random weights; predict the last layer's states plus ([pooled,] probs)."""
        t, _ = build(name, model, application, config, vocab, out_dir, rng, cond_dim=cond_dim, **kwargs)
        outs = predict(t.model.inputs, [hidden_of(t, shared)] + t.model.outputs, feed)
        keys = ["hidden", "pooled", "probs"] if len(outs) == 3 else ["hidden", "probs"]
        return t, dict(zip(keys, outs))

    small = base_config(vocab, embedding_size=32)
    # ALBERT: shared layers; pooler + MLM head (tied to the 32-wide embedding), UniLM with beam search
    t, arrays = variant("albert", "albert", "encoder", single, small, shared=True,
                        with_pool=True, with_mlm=True)
    record("albert", "albert", "encoder", ["--with-pool", "--with-mlm"], arrays, small)
    t, arrays = variant("albert_unilm", "albert", "unilm", pair, small, shared=True)
    beams(t, data, arrays)
    record("albert_unilm", "albert", "unilm", [], arrays, small)
    cond = data["cond"]
    t, arrays = variant("albert_cond", "albert", "unilm", pair + [cond], small, shared=True,
                        cond_dim=cond.shape[1])
    record("albert_cond", "albert", "unilm", [], arrays, small)

    # ALBERT unshared: its own weights per layer (written as kernel, kernel_1, ...)
    t, arrays = variant("albert_unshared", "albert_unshared", "encoder", single,
                        small, with_pool=True, with_mlm=True)
    record("albert_unshared", "albert_unshared", "encoder", ["--with-pool", "--with-mlm"], arrays, small)
    # ... and ALBERT's shared checkpoint loaded into it, as bert4keras users do
    name = "albert_unshared_from_albert"
    folder = os.path.join(out_dir, name)
    os.makedirs(folder)
    for f in os.listdir(os.path.join(out_dir, "albert")):
        if f.startswith("model.ckpt") or f == "bert_config.json":
            shutil.copy(os.path.join(out_dir, "albert", f), folder)
    t = build_transformer_model(os.path.join(folder, "bert_config.json"), os.path.join(folder, "model.ckpt"),
                                model="albert_unshared", with_pool=True, with_mlm=True, return_keras_model=False)
    outs = predict(t.model.inputs, [hidden_of(t)] + t.model.outputs, single)
    record(name, "albert_unshared", "encoder", ["--with-pool", "--with-mlm"],
           dict(zip(["hidden", "pooled", "probs"], outs)), small)

    # NEZHA: relative positions (table of 2·64 + 1 sinusoids), pooler + MLM; rows longer than 64 tokens
    cfg = base_config(vocab, max_relative_position=64)
    t, arrays = variant("nezha", "nezha", "encoder", single, cfg, with_pool=True,
                        with_mlm=True)
    long_ids, long_segs = long_rows(data)
    hidden, pooled, probs = predict(t.model.inputs, [hidden_of(t)] + t.model.outputs, [long_ids, long_segs])
    arrays.update(long_ids=long_ids, long_segs=long_segs, long_hidden=hidden, long_pooled=pooled, long_probs=probs)
    record("nezha", "nezha", "encoder", ["--with-pool", "--with-mlm"], arrays, cfg)
    t, arrays = variant("nezha_lm", "nezha", "lm", single, cfg)
    record("nezha_lm", "nezha", "lm", [], arrays, cfg)
    t, arrays = variant("nezha_unilm", "nezha", "unilm", pair, cfg)
    beams(t, data, arrays)
    record("nezha_unilm", "nezha", "unilm", [], arrays, cfg)

    # ELECTRA: discriminator body (embeddings_project 32 -> 64) and the discriminator head
    t, _ = build("electra", "electra", "encoder", small, vocab, out_dir, rng)
    (hidden,) = predict(t.model.inputs, [hidden_of(t)], single)
    record("electra", "electra", "encoder", [], {"hidden": hidden}, small)
    cfg = base_config(vocab)
    t, _ = build("electra_disc", "electra", "encoder", cfg, vocab, out_dir, rng, with_discriminator=True)
    hidden, probs = predict(t.model.inputs, [hidden_of(t), t.model.output], single)
    record("electra_disc", "electra", "encoder", ["--with-discriminator"], {"hidden": hidden, "probs": probs}, cfg)

    # RoBERTa: bert4keras's name for the BERT computation (Chinese RoBERTa-wwm-ext)
    t, arrays = variant("roberta", "roberta", "encoder", single, cfg,
                        with_pool=True, with_mlm=True)
    record("roberta", "roberta", "encoder", ["--with-pool", "--with-mlm"], arrays, cfg)

    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
