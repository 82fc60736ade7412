"""Reading a TF checkpoint: kexue's reader (numpy, no TensorFlow) vs ``tf.train.load_checkpoint``.

TensorFlow (``.venv-bert4keras``, ``benchmarks/_tf_checkpoint_side.py``) writes a BERT-base-shaped
checkpoint (bert4keras's names, 12 layers, vocab 21128: 102M float32 values, 409 MB) and times its own
reader; kexue then reads it with and without the CRC-32C check, and the SHA-256 of every tensor's bytes
must equal TensorFlow's. Times are medians after one warm-up read (the files are in the page cache).
The CRC-32C alone is timed on the largest tensor (the word embeddings, 65 MB).

    PYTHONPATH=. python benchmarks/tf_checkpoint.py [--layers 12] [--reps 3]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import save_result  # noqa: E402

from kexue.models.tf_checkpoint import read_tf_checkpoint  # noqa: E402
from kexue.models.tf_format import crc32c  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIDE = Path(__file__).resolve().with_name("_tf_checkpoint_side.py")


def median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(layers: int = 12, reps: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "bert_model.ckpt")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        proc = subprocess.run([str(REPO / ".venv-bert4keras" / "bin" / "python"), str(SIDE), prefix, str(layers),
                               str(reps)], env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"TensorFlow side failed:\n{proc.stderr[-4000:]}")
        tf_side = json.loads(proc.stdout.strip().splitlines()[-1])
        values = read_tf_checkpoint(prefix)
        digest = hashlib.sha256()
        for n in sorted(values):
            digest.update(n.encode() + np.ascontiguousarray(values[n]).tobytes())
        largest = max(values.values(), key=lambda v: v.nbytes)
        result = {"tensors": tf_side["tensors"], "bytes": tf_side["bytes"], "tensorflow": tf_side["tensorflow"],
                  "identical": digest.hexdigest() == tf_side["sha256"],
                  "s": {"tensorflow": tf_side["s"],
                        "kexue": median_time(lambda: read_tf_checkpoint(prefix), reps),
                        "kexue_no_crc": median_time(lambda: read_tf_checkpoint(prefix, verify=False), reps)},
                  "crc32c_mb_per_s": largest.nbytes / median_time(lambda: crc32c(largest), reps) / 1e6}
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    result = run(args.layers, args.reps)
    mb = result["bytes"] / 1e6
    print(f"{result['tensors']} tensors, {mb:.0f} MB; identical to TensorFlow {result['tensorflow']}: "
          f"{result['identical']}")
    for name, s in result["s"].items():
        print(f"  {name:13s} {s:6.2f} s  {mb / s:6.0f} MB/s")
    print(f"  crc32c alone: {result['crc32c_mb_per_s']:.0f} MB/s")
    save_result("tf_checkpoint", result)


if __name__ == "__main__":
    main()
