"""The TensorFlow side of ``benchmarks/tf_checkpoint.py``: runs inside ``.venv-bert4keras``.

    .venv-bert4keras/bin/python benchmarks/_tf_checkpoint_side.py PREFIX LAYERS REPS

Writes a BERT-base-shaped checkpoint at PREFIX (``SaveV2``, the op behind ``Saver.save``; bert4keras's
variable names; seeded random float32 values), then times ``tf.train.load_checkpoint(PREFIX)`` +
``get_tensor`` of every variable (median of REPS after one warm-up read) and prints one JSON line:
seconds, bytes, tensor count and the SHA-256 of every tensor's bytes in name order.
"""
import hashlib
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def bert_shapes(layers, hidden=768, ffn=3072, vocab=21128, positions=512):
    shapes = {"bert/embeddings/word_embeddings": (vocab, hidden),
              "bert/embeddings/token_type_embeddings": (2, hidden),
              "bert/embeddings/position_embeddings": (positions, hidden),
              "bert/embeddings/LayerNorm/gamma": (hidden,), "bert/embeddings/LayerNorm/beta": (hidden,),
              "bert/pooler/dense/kernel": (hidden, hidden), "bert/pooler/dense/bias": (hidden,)}
    for i in range(layers):
        layer = f"bert/encoder/layer_{i}"
        for name, (a, b) in {"attention/self/query": (hidden, hidden), "attention/self/key": (hidden, hidden),
                             "attention/self/value": (hidden, hidden), "attention/output/dense": (hidden, hidden),
                             "intermediate/dense": (hidden, ffn), "output/dense": (ffn, hidden)}.items():
            shapes[f"{layer}/{name}/kernel"] = (a, b)
            shapes[f"{layer}/{name}/bias"] = (b,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{layer}/{norm}/gamma"] = (hidden,)
            shapes[f"{layer}/{norm}/beta"] = (hidden,)
    return shapes


def main():
    prefix, layers, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    shapes = bert_shapes(layers)
    names = sorted(shapes)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(rng.normal(0, 0.02, shapes[n]).astype(np.float32)) for n in names])

    def read():
        reader = tf.train.load_checkpoint(prefix)
        return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}

    values = read()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        read()
        times.append(time.perf_counter() - t0)
    digest = hashlib.sha256()
    for n in sorted(values):
        digest.update(n.encode() + np.ascontiguousarray(values[n]).tobytes())
    print(json.dumps({"tensorflow": tf.__version__, "s": statistics.median(times), "tensors": len(values),
                      "bytes": int(sum(v.nbytes for v in values.values())), "sha256": digest.hexdigest()}))


if __name__ == "__main__":
    main()
