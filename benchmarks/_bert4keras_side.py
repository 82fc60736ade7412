"""The bert4keras side of ``benchmarks/bert4keras.py``: runs inside ``.venv-bert4keras`` (TensorFlow CPU).

    .venv-bert4keras/bin/python benchmarks/_bert4keras_side.py WORKDIR THREADS

Reads ``WORKDIR/setup.json`` (the BERT config) and ``WORKDIR/inputs.npz`` (token ids), builds a BERT
with seeded random weights through the bert4keras oracle's ``build`` (which saves a real TF checkpoint
in ``WORKDIR/bert/``), then rebuilds the model from that checkpoint as a plain encoder and as UniLM,
as a bert4keras user would. It then answers one JSON command per stdin line with one JSON line:

    {"op": "encode", "shape": "8x128", "save": false}  model.predict of the last layer's hidden states
    {"op": "beam", "save": false}                       AutoRegressiveDecoder.beam_search (no KV cache)
    {"op": "unilm", "ids": [[...]], "segs": [[...]]}      UniLM's token probabilities in one pass

``save`` writes the outputs to ``WORKDIR/bert4keras_<op>.npz`` for the difference check. The caller
times the round trip; the commands carry a few bytes, the work takes seconds. Graph mode (TF1-style
session), as in the oracle: bert4keras's checkpoint writer needs it, and it is bert4keras's native mode.
"""
import json
import os
import sys
from pathlib import Path

WORKDIR, THREADS = Path(sys.argv[1]), int(sys.argv[2])
os.environ["OMP_NUM_THREADS"] = str(THREADS)
HERE = Path(__file__).resolve().parent
# benchmarks/bert4keras.py would shadow the bert4keras package: this folder leaves the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests" / "oracles"))

# The protocol gets its own copy of stdout; anything TF or Keras prints goes to stderr.
PROTO = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

import numpy as np  # noqa: E402
from bert4keras_oracle import UniLMGenerator, build, layer_output, tf  # noqa: E402  (sets graph mode, TF_KERAS)
from bert4keras.backend import K, keras  # noqa: E402
from bert4keras.models import build_transformer_model  # noqa: E402


def session(threads: int):
    """One TF session with ``threads`` intra-op and inter-op threads, used by every Keras model here."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
    sess = tf.compat.v1.Session(config=config)
    tf.compat.v1.keras.backend.set_session(sess)  # bert4keras's K (tf_keras) has no set_session
    return config


def main():
    config = session(THREADS)
    setup = json.loads((WORKDIR / "setup.json").read_text())
    data = dict(np.load(WORKDIR / "inputs.npz"))
    layers = setup["config"]["num_hidden_layers"]
    # build() seeds every weight from this rng, writes bert_config.json and saves model.ckpt (with MLM head)
    build("bert", "bert", "encoder", setup["config"], setup["config"]["vocab_size"], str(WORKDIR),
          np.random.RandomState(setup["seed"]), with_mlm=True)
    K.clear_session()
    session(THREADS)
    folder = WORKDIR / "bert"
    kw = dict(config_path=str(folder / "bert_config.json"), checkpoint_path=str(folder / "model.ckpt"),
              return_keras_model=False)
    enc = build_transformer_model(**kw)
    encoder = keras.models.Model(enc.model.inputs, layer_output(enc, f"Transformer-{layers - 1}-FeedForward-Norm"))
    seq2seq = build_transformer_model(application="unilm", **kw).model
    generator = UniLMGenerator(seq2seq, start_id=None, end_id=-1, maxlen=setup["new_tokens"])  # no end token
    source = [data["beam_ids"][0], data["beam_segs"][0]]

    def encode(shape):
        ids, segs = data[f"ids_{shape}"], data[f"segs_{shape}"]
        return {"hidden": encoder.predict([ids, segs], batch_size=len(ids), verbose=0)}

    ops = {"encode": lambda cmd: encode(cmd["shape"]),
           "beam": lambda cmd: {"ids": generator.beam_search(source, topk=setup["beams"])},
           "unilm": lambda cmd: {"probs": seq2seq.predict([np.array(cmd["ids"]), np.array(cmd["segs"])], verbose=0)}}
    ready = {"tensorflow": tf.__version__, "intra_op_threads": config.intra_op_parallelism_threads,
             "inter_op_threads": config.inter_op_parallelism_threads, "graph_mode": not tf.executing_eagerly()}
    PROTO.write(json.dumps(ready) + "\n")
    PROTO.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        out = ops[cmd["op"]](cmd)
        if cmd.get("save"):
            np.savez(WORKDIR / f"bert4keras_{cmd['op']}_{cmd.get('shape', '')}.npz", **out)
        PROTO.write(json.dumps({"done": cmd["op"]}) + "\n")
        PROTO.flush()


if __name__ == "__main__":
    main()
