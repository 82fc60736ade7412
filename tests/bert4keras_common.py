"""Shared fixture of the bert4keras oracle tests: real Chinese sentences -> token ids -> one run of
``tests/oracles/bert4keras_oracle.py`` inside ``.venv-bert4keras`` (``make bert4keras-oracle``) ->
TF checkpoints and bert4keras's outputs, then ``kexue convert bert4keras`` on each checkpoint.

The oracle's outputs are cached in the system temp dir under a key hashing the oracle script, its
inputs and the virtualenv's install stamp (a changed oracle reruns); the conversions, kexue's code
under test, are redone in every session. Without the virtualenv the tests skip, except in CI (``CI=true``) where that is a failure.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kexue.data.shipped import sts_zh
from kexue.text.tokenizer import Tokenizer, build_vocab

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv-bert4keras" / "bin" / "python"
ORACLE = REPO / "tests" / "oracles" / "bert4keras_oracle.py"
TF_ORACLE = REPO / "tests" / "oracles" / "tf_checkpoint_oracle.py"
# GPT2-ML, GAU-α, keep_tokens / compound_tokens (imports ORACLE's helpers)
VARIANTS_ORACLE = REPO / "tests" / "oracles" / "bert4keras_variants_oracle.py"
# ALBERT, NEZHA, ELECTRA, RoBERTa (imports ORACLE's helpers)
ENCODERS_ORACLE = REPO / "tests" / "oracles" / "bert4keras_encoders_oracle.py"


def _pad(rows: list[list[int]], length: int | None = None) -> np.ndarray:
    length = length or max(len(r) for r in rows)
    out = np.zeros((len(rows), length), dtype=np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r[:length]
    return out


def make_inputs(folder: Path) -> dict:
    """Token ids of real STS-B (zh) sentences, right-padded with 0 as bert4keras pads."""
    pairs = [(p.a, p.b) for p in sts_zh("train")[:400]]
    texts = [p[0] for p in pairs] + [p[1] for p in pairs]
    vocab = build_vocab(texts)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = Tokenizer(folder / "vocab.txt")
    singles = [tok.encode(t, maxlen=24) for t in (texts[0], texts[1], texts[2], texts[3])]
    two = [tok.encode(p[0], p[1], maxlen=28) for p in pairs[4:7]]
    long = [tok.encode(p[0] + p[1] + pairs[i + 1][0], maxlen=44) for i, p in enumerate(pairs[7:9], 7)]
    long = sorted(long, key=lambda e: -len(e[0]))
    dec = [[tok.cls_id] + tok.encode(t)[0][1:] for t in (texts[5], texts[6], texts[8], texts[9])]
    gen = [tok.encode(t, maxlen=16) for t in texts[10:14]]
    rng = np.random.RandomState(0)
    arrays = {
        "ids": _pad([e[0] for e in singles]), "segs": _pad([e[1] for e in singles]),
        "pair_ids": _pad([e[0] for e in two]), "pair_segs": _pad([e[1] for e in two]),
        "long_ids": _pad([e[0] for e in long]), "long_segs": _pad([e[1] for e in long]),
        "t5_enc": _pad([e[0] for e in singles]), "t5_dec": _pad([d[:20] for d in dec]),
        "gen_ids": _pad([e[0] for e in gen]), "gen_segs": _pad([e[1] for e in gen]),
        "cond": rng.normal(size=(3, 8)).astype(np.float32),
        "vocab_size": np.array(len(vocab)),
    }
    np.savez(folder / "inputs.npz", **arrays)
    return arrays


def _venv_stamp() -> Path:
    """The oracle virtualenv's install stamp; without the virtualenv the test skips (fails in CI)."""
    stamp = VENV_PYTHON.parent.parent / ".kexue-installed"
    if not VENV_PYTHON.exists() or not stamp.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{VENV_PYTHON} is missing: `make bert4keras-oracle` must run before the tests in CI")
        pytest.skip(f"bert4keras oracle not installed ({VENV_PYTHON}); run `make bert4keras-oracle`")
    return stamp


def _oracle_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(TF_KERAS="1", TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return env


def _publish(work: Path, folder: Path) -> Path:
    """Move a finished run into the cache in one step; a concurrent session may have won the race."""
    try:
        shutil.copytree(work, folder.with_name(folder.name + f".{os.getpid()}"))
        os.replace(folder.with_name(folder.name + f".{os.getpid()}"), folder)
    except OSError:
        return work
    return folder


def run_oracle(scratch: Path, script: Path = ORACLE) -> Path:
    """The folder of a complete run of ``script`` (from the cache, or run now)."""
    stamp = _venv_stamp()
    arrays = make_inputs(scratch)
    own = b"" if script == ORACLE else script.read_bytes()  # a script importing ORACLE's helpers hashes both
    digest = hashlib.sha256(ORACLE.read_bytes() + own + str(stamp.stat().st_mtime_ns).encode())
    for k in sorted(arrays):
        digest.update(k.encode() + np.ascontiguousarray(arrays[k]).tobytes())
    key = digest.hexdigest()[:16]
    stem = "bert4keras-oracle" if script == ORACLE else script.stem.replace("_", "-")
    folder = Path(tempfile.gettempdir()) / f"kexue-{stem}-{key}"
    if (folder / "manifest.json").exists():
        return folder
    work = scratch / script.stem
    work.mkdir()
    shutil.copy(scratch / "inputs.npz", work / "inputs.npz")
    shutil.copy(scratch / "vocab.txt", work / "vocab.txt")
    proc = subprocess.run([str(VENV_PYTHON), str(script), str(work / "inputs.npz"), str(work)],
                          env=_oracle_env(), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"bert4keras oracle failed:\n{proc.stderr[-4000:]}")
    return _publish(work, folder)


def run_tf_checkpoint_oracle(scratch: Path) -> tuple[Path, Path]:
    """(TF oracle folder, bert4keras oracle folder): ``tests/oracles/tf_checkpoint_oracle.py`` run on
    the bert4keras oracle's checkpoints (labels ``b4k_<variant>``) plus its own; cached like ``run_oracle``."""
    b4k = run_oracle(scratch)
    variants = sorted(json.loads((b4k / "manifest.json").read_text()))
    digest = hashlib.sha256(TF_ORACLE.read_bytes() + str(_venv_stamp().stat().st_mtime_ns).encode()
                            + b4k.name.encode() + json.dumps(variants).encode())
    folder = Path(tempfile.gettempdir()) / f"kexue-tf-checkpoint-oracle-{digest.hexdigest()[:16]}"
    if (folder / "manifest.json").exists():
        return folder, b4k
    work = scratch / "tf_checkpoint_oracle"
    work.mkdir()
    args = [f"b4k_{v}={b4k / v / 'model.ckpt'}" for v in variants]
    proc = subprocess.run([str(VENV_PYTHON), str(TF_ORACLE), str(work), *args], env=_oracle_env(),
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"TF checkpoint oracle failed:\n{proc.stderr[-4000:]}")
    return _publish(work, folder), b4k


def convert_argv(folder: Path, name: str, entry: dict, out: Path) -> list[str]:
    """The ``kexue convert bert4keras`` command line for one oracle variant."""
    application = ["--application", entry["application"]] if entry["model"] not in ("t5.1.1", "gpt2_ml") else []
    if entry["model"] == "t5.1.1":  # T5 PEGASUS's generation tokens: [CLS] starts, [SEP] ends
        vocab = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        application = ["--decoder-start-id", str(vocab.index("[CLS]")), "--eos-id", str(vocab.index("[SEP]"))]
    return ["convert", "bert4keras", "--config", str(folder / name / "bert_config.json"),
            "--checkpoint", str(folder / name / "model.ckpt"), "--model", entry["model"], *application,
            *(f.replace("{dir}", str(folder / name)) for f in entry["flags"]), "--vocab", str(folder / "vocab.txt"), "--out", str(out / name)]


def run_convert(folder: Path, manifest: dict, out: Path) -> None:
    """``kexue convert bert4keras`` on every variant, through the CLI entry point, in one kexue process
    where TensorFlow cannot be imported (``sys.modules["tensorflow"] = None``): kexue reads the TF
    checkpoints itself (``kexue.models.tf_checkpoint``)."""
    jobs = out / "convert.json"
    jobs.write_text(json.dumps([convert_argv(folder, n, e, out) for n, e in manifest.items()]))
    code = ("import json, sys; sys.modules['tensorflow'] = None; from kexue.cli import main; "
            "sys.exit(max(main(a) for a in json.load(open(sys.argv[1]))))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code, str(jobs)], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"kexue convert bert4keras failed:\n{proc.stderr[-4000:]}")


def oracle_run(tmp_path_factory, script: Path = ORACLE) -> tuple[Path, Path, dict]:
    scratch = tmp_path_factory.mktemp("bert4keras")
    folder = run_oracle(scratch, script)
    manifest = json.loads((folder / "manifest.json").read_text())
    out = scratch / "converted"
    out.mkdir()
    run_convert(folder, manifest, out)
    return folder, out, dict(np.load(folder / "inputs.npz"))


@pytest.fixture(scope="session")
def variants_oracle(tmp_path_factory):
    """As ``oracle``, for ``tests/oracles/bert4keras_variants_oracle.py`` (GPT2-ML, GAU-α, keep_tokens)."""
    return oracle_run(tmp_path_factory, VARIANTS_ORACLE)


@pytest.fixture(scope="session")
def encoders_oracle(tmp_path_factory):
    """As ``oracle``, for ``tests/oracles/bert4keras_encoders_oracle.py`` (ALBERT, NEZHA, ELECTRA, RoBERTa)."""
    return oracle_run(tmp_path_factory, ENCODERS_ORACLE)


@pytest.fixture(scope="session")
def oracle(tmp_path_factory):
    """(oracle folder, converted folder, inputs): ``<oracle>/<variant>/outputs.npz`` holds bert4keras's
    outputs, ``<converted>/<variant>`` the folder ``kexue convert bert4keras`` wrote."""
    scratch = tmp_path_factory.mktemp("bert4keras")
    folder = run_oracle(scratch)
    manifest = json.loads((folder / "manifest.json").read_text())
    out = scratch / "converted"
    out.mkdir()
    run_convert(folder, manifest, out)
    return folder, out, dict(np.load(folder / "inputs.npz"))


def max_diff(ours: torch.Tensor, theirs: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Largest |ours - theirs| over the real (unpadded) positions."""
    a, b = ours.detach().double().numpy(), theirs.astype(np.float64)
    if mask is not None:
        a, b = a[mask.astype(bool)], b[mask.astype(bool)]
    return float(np.abs(a - b).max())


def report(name: str, **diffs: float) -> None:
    """Print the measured differences (``pytest -s`` shows them)."""
    print(f"[bert4keras] {name}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()), file=sys.stderr)
