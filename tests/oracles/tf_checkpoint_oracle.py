"""TensorFlow itself as the oracle of ``kexue.models.tf_checkpoint``: write checkpoints, read them back.

Runs inside ``.venv-bert4keras`` (TensorFlow 2.21), never in kexue's environment:

    .venv-bert4keras/bin/python tf_checkpoint_oracle.py OUT_DIR [LABEL=PREFIX ...]

Writes, with seeded random values, under ``OUT_DIR/<label>/``:

* ``dtypes/model.ckpt``: ``SaveV2`` of every numeric dtype, bool, scalars, an empty tensor and a
  non-ASCII name; ``strings/model.ckpt``: a float and a string tensor;
* ``many/model.ckpt``: 2000 tensors with long names (an index of several data blocks);
* ``sharded/ckpt``: ``tf.train.Checkpoint`` with ``MaxShardSizePolicy``: several data shards, tensors split
  into slices across shards, the ``_CHECKPOINTABLE_OBJECT_GRAPH`` bookkeeping string; ``unsharded/ckpt``
  the same variables without the policy;
* ``devices/model.ckpt``: a TF1 ``Saver(sharded=True)`` over variables on two (logical) CPUs, one data
  shard per device; ``partitioned/model.ckpt``: a TF1 partitioned variable (saved as slices).

For ``b4k_bert=PREFIX``, ``bert_bf16/model.ckpt`` is that checkpoint with its float32 tensors cast to
bfloat16. Then, for those and every ``LABEL=PREFIX`` given (the bert4keras oracle's checkpoints, labels
``b4k_<variant>``), everything ``tf.train.load_checkpoint(prefix).get_tensor(name)`` returns goes to
``OUT_DIR/dump/<label>.npz`` as raw bytes (uint8, no pickle), and ``OUT_DIR/manifest.json`` records the
prefix (relative to OUT_DIR for its own checkpoints), dtype, shape and npz key of each tensor (string
tensors: dtype "string", no bytes) and ``tf.train.list_variables``. TensorFlow cannot read a float16
tensor that its sharding policy sliced ("Dtype half not supported"): such tensors are recorded as
``unreadable``; ``unsharded/ckpt`` holds the same variables written without the policy.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def random(rng, shape, dtype):
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    if np.dtype(dtype).kind == "c":
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def save(prefix, tensors):
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tensors[n] for n in names])


def write_all(out, rng):
    prefixes = {}
    dtypes = {}
    for dtype in ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16",
                  "uint32", "uint64", "complex64", "complex128", "bool"):
        dtypes[f"matrix/{dtype}"] = tf.constant(random(rng, (5, 7), dtype))
        dtypes[f"scalar/{dtype}"] = tf.constant(random(rng, (), dtype))
    dtypes["matrix/bfloat16"] = tf.cast(tf.constant(random(rng, (6, 3), "float32")), tf.bfloat16)
    dtypes["scalar/bfloat16"] = tf.constant(1.5, tf.bfloat16)
    dtypes["empty"] = tf.zeros((0, 3), tf.float32)
    dtypes["rank4"] = tf.constant(random(rng, (2, 3, 4, 5), "float32"))
    dtypes["层/权重"] = tf.constant(random(rng, (3,), "float32"))
    dtypes["zz_unknown_dtype"] = tf.constant(random(rng, (4,), "float32"))
    prefixes["dtypes"] = os.path.join(out, "dtypes", "model.ckpt")
    save(prefixes["dtypes"], dtypes)

    prefixes["strings"] = os.path.join(out, "strings", "model.ckpt")
    save(prefixes["strings"], {"weights": tf.constant(random(rng, (3,), "float32")),
                               "vocab": tf.constant(["a", "bb", "中文"])})

    prefixes["many"] = os.path.join(out, "many", "model.ckpt")
    save(prefixes["many"], {f"encoder/layer_{i:04d}/" + "attention/self/query/kernel/" * 4 + "w":
                            tf.constant(random(rng, (2,), "float32")) for i in range(2000)})

    # tf.train.Checkpoint with a sharding policy: tensors above the shard size are cut into slices,
    # some with starts and lengths of 2 and 3 bytes in the slice keys.
    variables = {"long": tf.Variable(random(rng, (20000,), "float32")),
                 "matrix": tf.Variable(random(rng, (300, 50), "float32")),
                 "half": tf.Variable(random(rng, (700, 30), "float16")),
                 "steps": tf.Variable(np.int64(12345)), "small": tf.Variable(random(rng, (7,), "float32"))}
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=30000)
    prefixes["sharded"] = tf.train.Checkpoint(**variables).write(
        os.path.join(out, "sharded", "ckpt"),
        options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    prefixes["unsharded"] = tf.train.Checkpoint(**variables).write(os.path.join(out, "unsharded", "ckpt"))

    with tf.Graph().as_default():  # TF1: Saver(sharded=True) writes one data shard per device
        with tf.device("/cpu:0"):
            a = tf.compat.v1.get_variable("cpu0/kernel", initializer=random(rng, (40, 30), "float32"))
        with tf.device("/cpu:1"):
            b = tf.compat.v1.get_variable("cpu1/kernel", initializer=random(rng, (30, 20), "float32"))
            c = tf.compat.v1.get_variable("cpu1/step", initializer=np.int64(7))
            d = tf.compat.v1.get_variable("cpu1/half", initializer=random(rng, (6, 5), "float16"))
        part = tf.compat.v1.get_variable("part/embedding", shape=(10, 4), partitioner=tf.compat.v1.fixed_size_partitioner(3),
                                         initializer=tf.compat.v1.random_normal_initializer(seed=1))
        with tf.compat.v1.Session() as sess:
            for label in ("devices", "partitioned"):
                os.makedirs(os.path.join(out, label), exist_ok=True)
            sess.run(tf.compat.v1.global_variables_initializer())
            prefixes["devices"] = tf.compat.v1.train.Saver([a, b, c, d], sharded=True).save(
                sess, os.path.join(out, "devices", "model.ckpt"), write_meta_graph=False)
            prefixes["partitioned"] = tf.compat.v1.train.Saver([a] + list(part)).save(
                sess, os.path.join(out, "partitioned", "model.ckpt"), write_meta_graph=False)
    return prefixes


def dump(prefixes, out):
    os.makedirs(os.path.join(out, "dump"), exist_ok=True)
    manifest = {}
    for label, prefix in sorted(prefixes.items()):
        path = prefix if label.startswith("b4k_") else os.path.join(out, prefix)
        reader = tf.train.load_checkpoint(path)
        dtypes = reader.get_variable_to_dtype_map()
        tensors, arrays = {}, {}
        for i, name in enumerate(sorted(reader.get_variable_to_shape_map())):
            if dtypes[name] == tf.string:
                tensors[name] = {"dtype": "string"}
                continue
            try:
                value = np.asarray(reader.get_tensor(name))
            except ValueError as e:  # TensorFlow reads no sliced float16 ("Dtype half not supported")
                tensors[name] = {"dtype": dtypes[name].name, "unreadable": str(e)}
                continue
            key = f"t{i}"
            arrays[key] = np.frombuffer(np.ascontiguousarray(value).tobytes(), np.uint8)
            tensors[name] = {"dtype": value.dtype.name, "shape": list(value.shape), "key": key}
        np.savez(os.path.join(out, "dump", f"{label}.npz"), **arrays)
        manifest[label] = {"prefix": prefix, "tensors": tensors,
                           "list_variables": [[n, list(s)] for n, s in tf.train.list_variables(path)]}
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)


def bfloat16_copy(prefix, out):
    """Every float32 tensor of a checkpoint cast to bfloat16 (round to nearest even), the rest as is."""
    reader = tf.train.load_checkpoint(prefix)
    tensors = {}
    for name in reader.get_variable_to_shape_map():
        value = tf.constant(reader.get_tensor(name))
        tensors[name] = tf.cast(value, tf.bfloat16) if value.dtype == tf.float32 else value
    save(out, tensors)
    return out


def main():
    out = sys.argv[1]
    prefixes = write_all(out, np.random.default_rng(0))
    for arg in sys.argv[2:]:
        label, prefix = arg.split("=", 1)
        prefixes[label] = prefix
        if label == "b4k_bert":
            prefixes["bert_bf16"] = bfloat16_copy(prefix, os.path.join(out, "bert_bf16", "model.ckpt"))
    for label, prefix in prefixes.items():  # the folder's own checkpoints by relative prefix: it moves
        if not label.startswith("b4k_"):
            prefixes[label] = os.path.relpath(prefix, out)
    dump(prefixes, out)


if __name__ == "__main__":
    main()
