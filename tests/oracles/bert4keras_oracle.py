"""bert4keras 0.11.5 as an oracle: build models with random weights, save real TF checkpoints, predict.

Runs inside ``.venv-bert4keras`` (TensorFlow + tf-keras + bert4keras), never in kexue's environment:

    TF_KERAS=1 TF_USE_LEGACY_KERAS=1 .venv-bert4keras/bin/python bert4keras_oracle.py INPUTS.npz OUT_DIR

``INPUTS.npz`` holds token ids of real sentences (right-padded with 0, as bert4keras pads):
``ids``/``segs`` (single sentences), ``pair_ids``/``pair_segs`` (sentence pairs, UniLM),
``long_ids``/``long_segs`` (longer than the hierarchical model's position table), ``t5_enc``/``t5_dec``,
``gen_ids``/``gen_segs`` (SimBERT-style decoding sources), ``cond`` (condition vectors) and ``vocab_size``.
For every variant ``OUT_DIR/<name>/`` receives ``bert_config.json``, ``model.ckpt*`` and
``outputs.npz``; ``OUT_DIR/manifest.json`` lists the variants with the build options that
``kexue convert bert4keras`` needs. Arrays go through ``.npz`` only (no pickle).
"""
import json
import os
import sys

os.environ.setdefault("TF_KERAS", "1")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# save_weights_as_checkpoint is TF1 code: graph mode and the v1 Session / Saver.
tf.compat.v1.disable_eager_execution()
tf.Session = tf.compat.v1.Session
tf.train.Saver = tf.compat.v1.train.Saver

from bert4keras.backend import K, keras  # noqa: E402
from bert4keras.layers import LayerNormalization  # noqa: E402
from bert4keras.models import build_transformer_model  # noqa: E402
from bert4keras.snippets import AutoRegressiveDecoder  # noqa: E402

HIDDEN, LAYERS, HEADS, FFN = 64, 2, 4, 128


def base_config(vocab_size, **extra):
    config = {
        "vocab_size": int(vocab_size), "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "intermediate_size": FFN, "hidden_act": "gelu",
        "max_position_embeddings": 64, "type_vocab_size": 2,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    }
    config.update(extra)
    return config


def randomize(transformer, rng):
    """Every trainable weight drawn from the seeded ``rng`` (Keras's initializers are unseeded): gains
    around 1, everything else around 0, none exactly at its usual init (unit gains and zero biases
    would hide a swapped gamma/beta or a dropped bias)."""
    pairs = []
    for w in transformer.model.trainable_weights:
        shape = K.int_shape(w)
        base = np.ones(shape) if w.name.split("/")[-1].startswith("gamma") else rng.normal(0.0, 0.02, shape)
        pairs.append((w, (base + rng.normal(0.0, 0.05, shape)).astype(np.float32)))
    K.batch_set_value(pairs)


def conditional_mapping(transformer):
    """bert4keras's mapping lists a LayerNorm's beta/gamma only; Conditional LayerNorm's dense kernels
    are saved as ``<norm>/hidden_dense/kernel``, ``<norm>/beta_dense/kernel``, ``<norm>/gamma_dense/kernel``
    (the attribute names of bert4keras's ScaleOffset), in the layer's trainable_weights order."""
    mapping = transformer.variable_mapping()
    for layer_name, names in mapping.items():
        layer = transformer.layers.get(transformer.prefixed(layer_name))
        if isinstance(layer, LayerNormalization) and layer.conditional:
            base = names[0].rsplit("/", 1)[0]
            kernels = {getattr(layer, a).kernel.name: a for a in ("hidden_dense", "beta_dense", "gamma_dense")
                       if hasattr(layer, a)}
            extra = [kernels[w.name] for w in layer.trainable_weights[len(names):]]
            mapping[layer_name] = names + [f"{base}/{e}/kernel" for e in extra]
    return mapping


def layer_output(transformer, name):
    return transformer.model.get_layer(transformer.prefixed(name)).output


def predict(inputs, outputs, feed):
    model = keras.models.Model(inputs, outputs)
    out = model.predict(feed, verbose=0)
    return out if isinstance(out, list) else [out]


def build(name, model, application, config, vocab_size, out_dir, rng, cond_dim=None, **kwargs):
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    config_path = os.path.join(folder, "bert_config.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    extra_inputs = {}
    if cond_dim is not None:
        c_in = keras.layers.Input(shape=(cond_dim,), name="Input-Condition")
        kwargs.update(layer_norm_cond=c_in, additional_input_layers=c_in)
    t = build_transformer_model(config_path, model=model, application=application,
                                return_keras_model=False, **kwargs)
    randomize(t, rng)
    mapping = conditional_mapping(t) if cond_dim is not None else None
    t.save_weights_as_checkpoint(os.path.join(folder, "model.ckpt"), mapping=mapping)
    return t, folder


def main():
    inputs_path, out_dir = sys.argv[1], sys.argv[2]
    data = dict(np.load(inputs_path))
    vocab = int(data["vocab_size"])
    rng = np.random.RandomState(0)
    manifest = {}
    ids, segs = data["ids"], data["segs"]
    pair = [data["pair_ids"], data["pair_segs"]]

    def record(name, t, model, application, flags, arrays, config):
        np.savez(os.path.join(out_dir, name, "outputs.npz"), **arrays)
        manifest[name] = {"model": model, "application": application, "flags": flags, "config": config}

    def variant(name, model, application, flags, feed, config, cond_dim=None, **kwargs):
        """Build, save, and predict the last layer's states plus the model's outputs ([pooled,] probs)."""
        build_app = "encoder" if model == "gpt" else application  # bert4keras's GPT is causal already
        t, _ = build(name, model, build_app, config, vocab, out_dir, rng, cond_dim=cond_dim, **kwargs)
        outs = predict(t.model.inputs, [layer_output(t, "Transformer-1-FeedForward-Norm")] + t.model.outputs, feed)
        keys = ["hidden", "pooled", "probs"] if len(outs) == 3 else ["hidden", "probs"]
        record(name, t, model, application, flags, dict(zip(keys, outs)), config)

    cfg = base_config(vocab)
    # BERT encoder with pooler and MLM head; as a causal LM; as UniLM with SimBERT's linear pooler.
    variant("bert", "bert", "encoder", ["--with-pool", "--with-mlm"], [ids, segs], cfg, with_pool=True, with_mlm=True)
    variant("bert_lm", "bert", "lm", [], [ids, segs], cfg)
    variant("bert_unilm", "bert", "unilm", ["--with-pool", "linear"], pair, cfg, with_pool="linear")
    # Conditional LayerNorm: the condition straight into every norm, and through a hidden dense + activation.
    cond = data["cond"]
    variant("bert_cond", "bert", "unilm", [], pair + [cond], cfg, cond_dim=cond.shape[1])
    variant("bert_cond_hidden", "bert", "unilm", ["--cond-hidden-act", "relu"], pair + [cond], cfg,
            cond_dim=cond.shape[1], layer_norm_cond_hidden_size=16, layer_norm_cond_hidden_act="relu")
    # Hierarchical positions: a 16-position table read at up to 44 positions.
    variant("bert_hierarchical", "bert", "encoder", ["--with-mlm", "--hierarchical-alpha", "0.4"],
            [data["long_ids"], data["long_segs"]], base_config(vocab, max_position_embeddings=16), with_mlm=True,
            hierarchical_position=True)
    # RoFormer (RoPE, LayerNorm eps = Keras's 1e-7) and RoFormer-v2 (no biases, RMS norm without gain).
    variant("roformer", "roformer", "encoder", ["--with-pool", "--with-mlm"], [ids, segs], cfg, with_pool=True,
            with_mlm=True)
    variant("roformer_unilm", "roformer", "unilm", [], pair, cfg)
    # Factorised embeddings (embedding_size 32 < hidden 64): Embedding-Mapping in, MLM-Dense back out.
    variant("roformer_small_embedding", "roformer", "encoder", ["--with-mlm"], [ids, segs],
            base_config(vocab, embedding_size=32), with_mlm=True)
    variant("roformer_v2", "roformer_v2", "encoder", ["--with-mlm"], [ids, segs], cfg, with_mlm=True)
    # GPT (GPT-1 / CDial-GPT layout): post-norm layers, causal mask, tied head without bias.
    variant("gpt", "gpt", "lm", [], [ids, segs], cfg)

    # T5 v1.1 (gated GELU, untied head, bert4keras's cross-attention position bias).
    tcfg = base_config(vocab, hidden_act=["gelu", "linear"])
    t, _ = build("t5", "t5.1.1", "encoder", tcfg, vocab, out_dir, rng)
    enc, dec = data["t5_enc"], data["t5_dec"]
    (h,) = predict(t.encoder.inputs, [t.encoder.output], [enc])
    (probs,) = predict(t.model.inputs, [t.model.output], [enc, dec])
    record("t5", t, "t5.1.1", "encoder", [], {"hidden": h, "probs": probs}, tcfg)

    decoding(data, vocab, out_dir, rng, record)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


class UniLMGenerator(AutoRegressiveDecoder):
    """bert4keras's SimBERT / UniLM decoder: source = segment 0, generated tokens = segment 1, the whole
    prefix through ``seq2seq`` at every step (no cache); each step's next-token distribution is
    appended to ``seen`` when a list is given."""

    def __init__(self, seq2seq, seen=None, **kwargs):
        super().__init__(**kwargs)
        self.seq2seq, self.seen = seq2seq, seen

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        probas = self.last_token(self.seq2seq).predict([token_ids, segment_ids], verbose=0)
        if self.seen is not None:
            self.seen.append(probas.copy())
        return probas


def decoding(data, vocab, out_dir, rng, record):
    """SimBERT-style UniLM decoding with bert4keras's AutoRegressiveDecoder: source = segment 0,
    generated tokens = segment 1, no start token. A random model puts [SEP] first or never, so the
    end token is the token its greedy continuations produce most often after their second step:
    hypotheses then end at varied lengths, which is what the end-token rules act on."""
    cfg = base_config(vocab)
    t, _ = build("unilm_decode", "bert", "unilm", cfg, vocab, out_dir, rng)
    seq2seq = t.model

    seen = []  # every step's full next-token distribution, while recording

    def decoder(**kwargs):
        return UniLMGenerator(seq2seq, seen=seen, **kwargs)

    maxlen, beams, arrays = 12, 4, {}
    rows = [(r[r > 0], s[r > 0]) for r, s in zip(data["gen_ids"], data["gen_segs"])]
    endless = decoder(start_id=None, end_id=-1, maxlen=maxlen)  # end token disabled
    counts = {}
    for x, s in rows:
        for token in endless.random_sample([x, s], 1, topk=1)[0][2:].tolist():  # greedy
            counts[token] = counts.get(token, 0) + 1
    end_id = min(counts, key=lambda k: (-counts[k], k))
    arrays["end_id"] = np.array(end_id)
    ended = decoder(start_id=None, end_id=end_id, maxlen=maxlen)
    for i, (x, s) in enumerate(rows):
        arrays[f"beam_{i}"] = ended.beam_search([x, s], topk=beams)
        arrays[f"beam_noend_{i}"] = endless.beam_search([x, s], topk=beams)
        np.random.seed(i)
        arrays[f"top1_{i}"] = np.stack(ended.random_sample([x, s], 2, topk=1))
        # Top-k sampling: the path bert4keras sampled and the full distribution it saw at each step.
        np.random.seed(100 + i)
        seen.clear()
        (sample,) = ended.random_sample([x, s], 1, topk=5)
        arrays[f"topk_{i}"] = sample
        arrays[f"topk_probs_{i}"] = np.concatenate(seen, 0)
    record("unilm_decode", t, "bert", "unilm", [], arrays, cfg)


if __name__ == "__main__":
    main()
