"""kexue's TF checkpoint reader (no TensorFlow) against TensorFlow itself.

TensorFlow 2.21 (``.venv-bert4keras``, in a subprocess: ``tests/oracles/tf_checkpoint_oracle.py``)
writes checkpoints (bert4keras's BERT / RoFormer / GPT / T5 variants, every dtype, 2000 tensors,
sharded by policy and by device, a partitioned variable) and dumps what
``tf.train.load_checkpoint(prefix).get_tensor(name)`` returns; kexue's reader must give the same bytes,
dtype and shape for every tensor. Damaged copies must fail with one line naming the file.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from bert4keras_common import run_tf_checkpoint_oracle
from kexue.models import tf_checkpoint as tfc
from kexue.models.tf_checkpoint import TFCheckpointError, list_variables, read_tf_checkpoint
from kexue.models.tf_format import (FOOTER_SIZE, block_entries, block_handle, crc32c, masked_crc32c,
                                    read_block)

OWN = ["dtypes", "many", "sharded", "unsharded", "devices", "partitioned", "bert_bf16"]


@pytest.fixture(scope="module")
def tf_oracle(tmp_path_factory):
    """(folder, manifest, prefix(label) -> Path, dump(label) -> npz)."""
    folder, b4k = run_tf_checkpoint_oracle(tmp_path_factory.mktemp("tf_checkpoint"))
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))

    def prefix(label: str) -> Path:
        return b4k / label[4:] / "model.ckpt" if label.startswith("b4k_") else folder / manifest[label]["prefix"]

    return folder, manifest, prefix, lambda label: np.load(folder / "dump" / f"{label}.npz")


def _same_as_tensorflow(ours: dict, info: dict, dump) -> int:
    """Every tensor TensorFlow read equals kexue's byte for byte; returns how many were compared."""
    readable = {n: t for n, t in info["tensors"].items() if "key" in t}
    skipped = {n for n, t in info["tensors"].items() if t["dtype"] == "string"}
    assert skipped <= set(tfc.BOOKKEEPING)
    assert set(ours) == set(info["tensors"]) - skipped
    for name, t in readable.items():
        got = ours[name]
        assert (got.dtype.name, list(got.shape)) == (t["dtype"], t["shape"]), name
        assert got.tobytes() == dump[t["key"]].tobytes(), name
    return len(readable)


def test_crc32c_is_the_castagnoli_crc(monkeypatch):
    """The vectorised CRC against the bit-by-bit definition (reflected polynomial 0x82F63B78) and the
    standard check value; small pieces force the multi-piece path."""
    def bitwise(data: bytes) -> int:
        crc = 0xFFFFFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        return crc ^ 0xFFFFFFFF

    assert crc32c(b"123456789") == 0xE3069283
    rng = np.random.default_rng(0)
    lengths = list(range(0, 40)) + [252, 253, 256, 1021, 4099, 20000]
    for n in lengths:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == bitwise(data), n
        assert crc32c(np.frombuffer(data, np.uint8)) == crc32c(bytearray(data))
    from kexue.models import tf_format
    monkeypatch.setattr(tf_format, "_MAX_LANES", 2)  # pieces of 512 bytes
    for n in (508, 509, 511, 512, 1020, 1021, 1024, 5000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == bitwise(data), n
    crc = bitwise(b"abc")
    assert masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_bert4keras_checkpoints_equal_tensorflow(tf_oracle):
    """BERT, RoFormer(-v2), GPT, T5 ... as bert4keras saves them: every variable, and the listing."""
    _, manifest, prefix, dump = tf_oracle
    labels = sorted(label for label in manifest if label.startswith("b4k_"))
    assert {"b4k_bert", "b4k_roformer", "b4k_t5", "b4k_gpt", "b4k_roformer_v2"} <= set(labels)
    compared = 0
    for label in labels:
        compared += _same_as_tensorflow(read_tf_checkpoint(prefix(label)), manifest[label], dump(label))
        assert [[n, list(s)] for n, s in list_variables(prefix(label))] == manifest[label]["list_variables"]
    assert compared > 400


@pytest.mark.parametrize("label", OWN)
def test_own_checkpoints_equal_tensorflow(tf_oracle, label):
    _, manifest, prefix, dump = tf_oracle
    info = manifest[label]
    ours = read_tf_checkpoint(prefix(label))
    assert _same_as_tensorflow(ours, info, dump(label)) >= 1
    tf_listing = [[n, s] for n, s in info["list_variables"] if info["tensors"][n]["dtype"] != "string"]
    assert [[n, list(s)] for n, s in list_variables(prefix(label))] == tf_listing
    unreadable = {n for n, t in info["tensors"].items() if "unreadable" in t}
    assert unreadable == ({"half/.ATTRIBUTES/VARIABLE_VALUE"} if label == "sharded" else set())


def test_every_dtype_is_covered(tf_oracle):
    _, manifest, _, _ = tf_oracle
    dtypes = {t["dtype"] for t in manifest["dtypes"]["tensors"].values()}
    assert dtypes >= {"float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8",
                      "uint16", "uint32", "uint64", "complex64", "complex128", "bool"}
    shapes = {tuple(t["shape"]) for t in manifest["dtypes"]["tensors"].values()}
    assert {(), (0, 3), (2, 3, 4, 5)} <= shapes and "层/权重" in manifest["dtypes"]["tensors"]


def test_sharded_and_sliced_checkpoints(tf_oracle):
    """tf.train.Checkpoint's MaxShardSizePolicy: 7 data shards, tensors cut into slices across them
    (slice keys with 1-3 byte numbers); the float16 tensor TensorFlow itself cannot read back from the
    slices equals TensorFlow's read of the same variable saved without the policy."""
    _, manifest, prefix, dump = tf_oracle
    sharded = prefix("sharded")
    header, tensors = tfc._read_index(str(sharded))
    assert header["num_shards"] == len(list(sharded.parent.glob("ckpt.data-*"))) > 2
    sliced = {n: t for n, t in tensors.items() if len(t["parts"]) > 1}
    assert "long/.ATTRIBUTES/VARIABLE_VALUE" in sliced and "half/.ATTRIBUTES/VARIABLE_VALUE" in sliced
    starts = [region[0].start for t in sliced.values() for _, region in t["parts"]]
    assert max(starts) >= 1 << 13  # a 3-byte OrderedCode number
    assert len({e["shard_id"] for e, _ in sliced["long/.ATTRIBUTES/VARIABLE_VALUE"]["parts"]}) > 1
    info = manifest["unsharded"]["tensors"]["half/.ATTRIBUTES/VARIABLE_VALUE"]
    half = read_tf_checkpoint(sharded)["half/.ATTRIBUTES/VARIABLE_VALUE"]
    assert half.dtype == np.float16 and list(half.shape) == info["shape"]
    assert half.tobytes() == dump("unsharded")[info["key"]].tobytes()
    devices = tfc._read_index(str(prefix("devices")))[0]
    assert devices["num_shards"] == 2  # Saver(sharded=True): one shard per device
    _, parted = tfc._read_index(str(prefix("partitioned")))
    assert len(parted["part/embedding"]["parts"]) == 3


def test_index_of_several_blocks(tf_oracle):
    _, _, prefix, _ = tf_oracle
    data = Path(f"{prefix('many')}.index").read_bytes()
    _, pos = block_handle(data[-FOOTER_SIZE:-8], 0)
    index, _ = block_handle(data[-FOOTER_SIZE:-8], pos)
    assert len(block_entries(read_block(data, index, "index block"), "index block")) >= 2
    assert len(list_variables(prefix("many"))) == 2000


def test_bfloat16_without_ml_dtypes(tf_oracle, monkeypatch):
    """Without ml_dtypes, bfloat16 comes back widened to float32: TensorFlow's bits, shifted up 16."""
    _, manifest, prefix, dump = tf_oracle
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    ours = read_tf_checkpoint(prefix("dtypes"))
    for name, t in manifest["dtypes"]["tensors"].items():
        if t["dtype"] == "bfloat16":
            bits = np.frombuffer(dump("dtypes")[t["key"]].tobytes(), np.uint16).astype(np.uint32) << 16
            assert ours[name].dtype == np.float32 and ours[name].tobytes() == bits.tobytes()


def test_bert4keras_reader_widens_bfloat16(tf_oracle):
    """kexue.models.bert4keras.read_tf_checkpoint: bfloat16 widened to float32 (torch takes no
    ml_dtypes arrays), the rest as stored."""
    from kexue.models.bert4keras import read_tf_checkpoint as b4k_read

    _, manifest, prefix, dump = tf_oracle
    variables = b4k_read(prefix("bert_bf16"))
    info = manifest["bert_bf16"]["tensors"]
    assert {info[n]["dtype"] for n in variables} == {"bfloat16"}
    for name, value in variables.items():
        bits = np.frombuffer(dump("bert_bf16")[info[name]["key"]].tobytes(), np.uint16).astype(np.uint32) << 16
        assert value.dtype == np.float32 and value.tobytes() == bits.tobytes()


def test_prefix_forms(tf_oracle, tmp_path):
    """A prefix, its .index or .data file, a folder with a checkpoint file or with one *.index."""
    _, _, prefix, _ = tf_oracle
    bert = prefix("b4k_bert")
    expected = list_variables(bert)
    assert (bert.parent / "checkpoint").is_file()
    for form in (bert.parent, f"{bert}.index", f"{bert}.data-00000-of-00001"):
        assert list_variables(form) == expected
        assert tfc.resolve_prefix(form) == str(bert)
    one = tmp_path / "one"
    one.mkdir()
    for f in bert.parent.glob("model.ckpt.*"):
        shutil.copy(f, one / f.name.replace("model.ckpt", "bert_model.ckpt"))
    assert tfc.resolve_prefix(one) == str(one / "bert_model.ckpt")
    shutil.copy(one / "bert_model.ckpt.index", one / "other.index")
    with pytest.raises(TFCheckpointError, match=r"holds 2 checkpoints \(bert_model.ckpt.index, other.index\)"):
        read_tf_checkpoint(one)
    (one / "checkpoint").write_text('model_checkpoint_path: "bert_model.ckpt"\n')
    assert tfc.resolve_prefix(one) == str(one / "bert_model.ckpt")  # relative to the folder
    (one / "checkpoint").write_text('model_checkpoint_path: "/saved/elsewhere/bert_model.ckpt"\n'
                                    'all_model_checkpoint_paths: "/saved/elsewhere/bert_model.ckpt"\n')
    assert tfc.resolve_prefix(one) == str(one / "bert_model.ckpt")  # the folder moved since: by file name
    two = tmp_path / "two"  # a copy whose checkpoint file still names the original, which exists: the copy wins
    two.mkdir()
    for f in bert.parent.glob("model.ckpt.*"):
        shutil.copy(f, two / f.name)
    (two / "checkpoint").write_text(f'model_checkpoint_path: "{bert}"\n')
    assert tfc.resolve_prefix(two) == str(two / "model.ckpt")
    (one / "checkpoint").write_text('model_checkpoint_path: "gone.ckpt"\n')
    with pytest.raises(TFCheckpointError, match=r"checkpoint: model_checkpoint_path 'gone.ckpt' names no checkpoint"):
        read_tf_checkpoint(one)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TFCheckpointError, match="empty: no TF checkpoint in this folder"):
        read_tf_checkpoint(tmp_path / "empty")
    with pytest.raises(TFCheckpointError, match=r"model.ckpt.index is missing"):
        read_tf_checkpoint(tmp_path / "model.ckpt")


def test_strings_are_refused_by_name(tf_oracle):
    _, _, prefix, _ = tf_oracle
    with pytest.raises(TFCheckpointError, match=r"strings/model.ckpt.index: tensor 'vocab' is a string tensor"):
        read_tf_checkpoint(prefix("strings"))
    with pytest.raises(TFCheckpointError, match="'vocab'"):
        list_variables(prefix("strings"))


# ------------------------------------------------------------------------------------- damaged checkpoints

def _copy(prefix: Path, to: Path) -> Path:
    to.mkdir()
    for f in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(f, to / f.name)
    return to / prefix.name


def _error(prefix: Path, match: str, file: Path, **kw) -> str:
    with pytest.raises(TFCheckpointError, match=match) as err:
        read_tf_checkpoint(prefix, **kw)
    message = str(err.value)
    assert "\n" not in message and str(file) in message, message
    return message


def _patch_block(index: Path, old: bytes, new: bytes, kind: int = 0) -> None:
    """Replace ``old`` by ``new`` (same length) in the index's first data block and reseal the block
    (compression type ``kind``, masked CRC-32C of contents + type), as a writer would have."""
    data = bytearray(index.read_bytes())
    footer = bytes(data[-FOOTER_SIZE:-8])
    _, pos = block_handle(footer, 0)
    handle, _ = block_handle(footer, pos)
    (_, value), *_ = block_entries(read_block(bytes(data), handle, "index block"), "index block")
    (offset, size), _ = block_handle(value, 0)
    block = bytes(data[offset:offset + size])
    if old:
        assert block.count(old) == 1 and len(old) == len(new)
        start = offset + block.index(old)
        data[start:start + len(old)] = new
    data[offset + size] = kind
    data[offset + size + 1:offset + size + 5] = masked_crc32c(bytes(data[offset:offset + size + 1])).to_bytes(4, "little")
    index.write_bytes(bytes(data))


def test_truncated_data(tf_oracle, tmp_path):
    _, _, prefix, _ = tf_oracle
    ckpt = _copy(prefix("b4k_bert"), tmp_path / "c")
    shard = Path(f"{ckpt}.data-00000-of-00001")
    shard.write_bytes(shard.read_bytes()[:1000])
    _error(ckpt, r"truncated: tensor '.*' needs bytes", shard)


def test_flipped_byte_fails_the_checksum(tf_oracle, tmp_path):
    _, manifest, prefix, dump = tf_oracle
    ckpt = _copy(prefix("b4k_bert"), tmp_path / "c")
    shard = Path(f"{ckpt}.data-00000-of-00001")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    _error(ckpt, r"checksum mismatch in tensor '.*' \(CRC-32C of bytes \d+-\d+\): the file is corrupt", shard)
    info, tf_dump = manifest["b4k_bert"]["tensors"], dump("b4k_bert")
    ours = read_tf_checkpoint(ckpt, verify=False)
    changed = [n for n, v in ours.items() if v.tobytes() != tf_dump[info[n]["key"]].tobytes()]
    assert len(changed) == 1


def test_missing_shard(tf_oracle, tmp_path):
    _, _, prefix, _ = tf_oracle
    ckpt = _copy(prefix("devices"), tmp_path / "c")
    Path(f"{ckpt}.data-00001-of-00002").unlink()
    _error(ckpt, r"model.ckpt.data-00001-of-00002 is missing: data shard 1 of 2", Path(f"{ckpt}.data-00001-of-00002"))


def test_damaged_index(tf_oracle, tmp_path):
    _, _, prefix, _ = tf_oracle
    ckpt = _copy(prefix("b4k_bert"), tmp_path / "c")
    index = Path(f"{ckpt}.index")
    good = index.read_bytes()
    index.write_bytes(good[:-8] + b"\x00" * 8)
    _error(ckpt, r"not a TensorFlow checkpoint index \(bad magic number 0x0000000000000000", index)
    index.write_bytes(good[:30])
    _error(ckpt, "shorter than the 48-byte table footer", index)
    index.write_bytes(good[:10] + bytes([good[10] ^ 0x40]) + good[11:])
    _error(ckpt, "checksum mismatch in the data block 0 at offset 0", index)
    index.write_bytes(good)
    _patch_block(index, b"", b"", kind=1)
    _error(ckpt, "data block 0 at offset 0 is snappy-compressed; kexue reads only uncompressed", index)
    index.write_bytes(good)
    _patch_block(index, b"\x00\x00\x06\x08\x01\x1a\x02\x08\x01", b"\x00\x00\x06\x08\x01\x10\x01\x10\x01")
    _error(ckpt, "a big-endian checkpoint", index)


def test_unknown_dtype(tf_oracle, tmp_path):
    _, _, prefix, _ = tf_oracle
    ckpt = _copy(prefix("dtypes"), tmp_path / "c")
    index = Path(f"{ckpt}.index")
    good = index.read_bytes()
    for code, name in ((20, r"DT_RESOURCE \(20\)"), (99, "unknown dtype enum 99"), (11, r"DT_QINT8 \(11\)")):
        index.write_bytes(good)
        _patch_block(index, b"zz_unknown_dtype\x08\x01", b"zz_unknown_dtype\x08" + bytes([code]))
        _error(ckpt, rf"tensor 'zz_unknown_dtype' has dtype {name}, which kexue cannot read", index)


def test_bfloat16_checkpoint_converts(tf_oracle, tmp_path):
    """``convert`` on bert4keras's BERT cast to bfloat16 by TensorFlow gives the float32 conversion's
    weights rounded to bfloat16 (round to nearest even, as torch rounds), without TensorFlow."""
    import torch
    from safetensors.torch import load_file

    from kexue.models.bert4keras import convert

    _, _, prefix, _ = tf_oracle
    config = prefix("b4k_bert").parent / "bert_config.json"
    weights = {}
    for label in ("b4k_bert", "bert_bf16"):
        out = convert(config, prefix(label), "bert", tmp_path / label, with_pool=True, with_mlm=True)
        weights[label] = load_file(out / "model.safetensors")
    assert weights["b4k_bert"].keys() == weights["bert_bf16"].keys()
    for name, value in weights["b4k_bert"].items():
        assert torch.equal(weights["bert_bf16"][name], value.bfloat16().float()), name
