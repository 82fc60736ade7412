"""TensorFlow checkpoints read without TensorFlow: the tensor-bundle format in numpy.

A checkpoint ``PREFIX`` (as given to ``Saver.save`` / ``tf.train.Checkpoint``; bert4keras's
``bert_model.ckpt``) is two kinds of file:

* ``PREFIX.index``: an SSTable (``kexue.models.tf_format``) whose empty key holds the
  ``BundleHeaderProto`` (num_shards, endianness, version) and whose other keys are tensor names, each
  holding a ``BundleEntryProto`` (dtype, shape, shard_id, offset, size, crc32c, slices).
* ``PREFIX.data-0000k-of-0000n``: the tensors' raw little-endian bytes, row-major; ``shard_id`` names the
  file, ``offset`` / ``size`` the bytes, ``crc32c`` their masked CRC-32C, which ``read_tf_checkpoint``
  checks (``verify=False`` skips it).

A tensor saved in slices (a partitioned variable, or one that ``tf.train.Checkpoint``'s sharding policy
split across shards) lists its slices' extents (start, length per dimension; no length = the whole
dimension) in its entry; each slice is its own entry, under the key TensorFlow's ``OrderedCode`` builds:
``num(0) ‖ string(name) ‖ num(rank) ‖ (signed(start) ‖ signed(length or -1))`` per dimension. The
slices are read and put together.

Supported dtypes: float16/32/64, bfloat16 (``ml_dtypes.bfloat16`` when ml_dtypes is installed, as
TensorFlow returns it, else widened exactly to float32), int8/16/32/64, uint8/16/32/64, bool,
complex64/128. String tensors are refused by name, except the object graph that ``tf.train.Checkpoint``
stores as bookkeeping (``_CHECKPOINTABLE_OBJECT_GRAPH``), which is skipped. Big-endian bundles,
compressed index blocks and quantized / float8 / int4 / resource / variant dtypes are refused. Every
error is one line naming the file and what is wrong.
"""
from __future__ import annotations

import codecs
import re
from pathlib import Path

import numpy as np

from kexue.models.tf_format import Malformed, crc32c, fields, masked_crc32c, read_table, signed

__all__ = ["TFCheckpointError", "read_tf_checkpoint", "list_variables", "resolve_prefix", "crc32c",
           "masked_crc32c"]

# String tensors that tf.train.Checkpoint writes as bookkeeping: skipped, not refused.
BOOKKEEPING = ("_CHECKPOINTABLE_OBJECT_GRAPH",)
# TensorFlow DataType enum (tensorflow/core/framework/types.proto) -> little-endian numpy dtype.
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 8: "<c8", 9: "<i8", 10: "?",
          14: "bfloat16", 17: "<u2", 18: "<c16", 19: "<f2", 22: "<u4", 23: "<u8"}
DTYPE_NAMES = ["DT_INVALID", "DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_UINT8", "DT_INT16", "DT_INT8", "DT_STRING",
               "DT_COMPLEX64", "DT_INT64", "DT_BOOL", "DT_QINT8", "DT_QUINT8", "DT_QINT32", "DT_BFLOAT16",
               "DT_QINT16", "DT_QUINT16", "DT_UINT16", "DT_COMPLEX128", "DT_HALF", "DT_RESOURCE", "DT_VARIANT",
               "DT_UINT32", "DT_UINT64", "DT_FLOAT8_E5M2", "DT_FLOAT8_E4M3FN", "DT_FLOAT8_E4M3FNUZ",
               "DT_FLOAT8_E4M3B11FNUZ", "DT_FLOAT8_E5M2FNUZ", "DT_INT4", "DT_UINT4", "DT_INT2", "DT_UINT2",
               "DT_FLOAT4_E2M1FN"]
DT_STRING = 7


class TFCheckpointError(ValueError):
    """A TF checkpoint that cannot be read: the message names the file and what is wrong."""


# ----------------------------------------------------------------------------------- the bundle's protos

def _header(buf: bytes) -> dict:
    """BundleHeaderProto: num_shards = 1, endianness = 2 (0 little, 1 big), version = 3 (VersionDef:
    producer = 1, min_consumer = 2, bad_consumers = 3)."""
    header = {"num_shards": 0, "endianness": 0, "producer": 0, "min_consumer": 0}
    for number, value in fields(buf, "bundle header"):
        if number == 1:
            header["num_shards"] = signed(value)
        elif number == 2:
            header["endianness"] = value
        elif number == 3:
            for n, v in fields(value, "bundle header version"):
                if n in (1, 2):
                    header["producer" if n == 1 else "min_consumer"] = signed(v)
    return header


def _shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: dim = 2 (Dim: size = 1, name = 2), unknown_rank = 3."""
    dims = []
    for number, value in fields(buf, "tensor shape"):
        if number == 2:
            size = 0
            for n, v in fields(value, "tensor shape"):
                if n == 1:
                    size = signed(v)
            if size < 0:
                raise Malformed(f"a dimension of unknown size {size}")
            dims.append(size)
        elif number == 3 and value:
            raise Malformed("a shape of unknown rank")
    return tuple(dims)


def _slice(buf: bytes) -> list[tuple[int, int]]:
    """TensorSliceProto: extent = 1 (Extent: start = 1, length = 2; no length = the whole dimension,
    returned as -1)."""
    extents = []
    for number, value in fields(buf, "tensor slice"):
        if number == 1:
            start, length = 0, -1
            for n, v in fields(value, "tensor slice"):
                if n == 1:
                    start = signed(v)
                elif n == 2:
                    length = signed(v)
            extents.append((start, length))
    return extents


def _entry(buf: bytes) -> dict:
    """BundleEntryProto: dtype = 1, shape = 2, shard_id = 3, offset = 4, size = 5, crc32c = 6 (fixed32),
    slices = 7 (repeated TensorSliceProto)."""
    entry = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": 0, "slices": []}
    for number, value in fields(buf, "bundle entry"):
        if number == 1:
            entry["dtype"] = value
        elif number == 2:
            entry["shape"] = _shape(value)
        elif number in (3, 4, 5):
            entry[("shard_id", "offset", "size")[number - 3]] = signed(value)
        elif number == 6:
            entry["crc32c"] = value
        elif number == 7:
            entry["slices"].append(_slice(value))
    return entry


def _num(value: int) -> bytes:
    """OrderedCode::WriteNumIncreasing: the byte count, then the value big-endian."""
    size = (value.bit_length() + 7) // 8
    return bytes([size]) + value.to_bytes(size, "big")


def _signed_num(value: int) -> bytes:
    """OrderedCode::WriteSignedNumIncreasing: n = bit_length(v or ~v) // 7 + 1 bytes of the sign-extended
    value big-endian, the top n bits of the first bytes set to 1 0…0 (sign-flipped)."""
    x = ~value if value < 0 else value
    n = x.bit_length() // 7 + 1
    if n == 1:
        return bytes([(0x80 ^ value) & 0xFF])
    raw = bytearray((value % (1 << 80)).to_bytes(10, "big")[10 - n:])
    header = {9: (0xFF, 0x80), 10: (0xFF, 0xC0)}.get(n, ((0xFF00 >> n) & 0xFF, 0))
    raw[0] ^= header[0]
    raw[1] ^= header[1]
    return bytes(raw)


def slice_key(name: bytes, extents: list[tuple[int, int]]) -> bytes:
    """The index key of one slice of tensor ``name`` (TensorFlow's EncodeTensorNameSlice)."""
    escaped = name.replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff")
    key = _num(0) + escaped + b"\x00\x01" + _num(len(extents))
    for start, length in extents:
        key += _signed_num(start) + _signed_num(length)
    return key


# ------------------------------------------------------------------------------------------- the bundle

def _dtype_name(dtype: int) -> str:
    return f"{DTYPE_NAMES[dtype]} ({dtype})" if 0 <= dtype < len(DTYPE_NAMES) else f"unknown dtype enum {dtype}"


def _itemsize(dtype: int) -> int:
    return 2 if DTYPES[dtype] == "bfloat16" else np.dtype(DTYPES[dtype]).itemsize


def _numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype a TF dtype's bytes are read as (bfloat16: ml_dtypes.bfloat16, else uint16 bits)."""
    if DTYPES[dtype] == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            return np.dtype("<u2")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(DTYPES[dtype])


def resolve_prefix(path: str | Path) -> str:
    """The checkpoint prefix that ``path`` names: a prefix (``bert_model.ckpt``), its ``.index`` or
    ``.data-…`` file, or a folder with a ``checkpoint`` file (its ``model_checkpoint_path``; a path from
    the machine that saved it is looked up by its file name in the folder) or one ``*.index``."""
    path = str(path)
    if Path(path + ".index").is_file():
        return path
    if Path(path).is_file():
        stem = re.sub(r"\.(index|data-\d{5}-of-\d{5})$", "", path)
        if stem != path and Path(stem + ".index").is_file():
            return stem
    folder = Path(path)
    if folder.is_dir():
        state = folder / "checkpoint"
        if state.is_file():
            text = state.read_text(encoding="utf-8", errors="replace")
            m = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"\s*$', text, re.M)
            if m is None:
                raise TFCheckpointError(f"{state}: no model_checkpoint_path line")
            name = codecs.escape_decode(m.group(1).encode("utf-8"))[0].decode("utf-8", errors="replace")
            prefix = Path(name) if Path(name).is_absolute() else folder / name
            moved = folder / Path(name.replace("\\", "/")).name  # saved elsewhere, then the folder moved
            # the folder the caller named wins: an absolute path is read from there when the folder holds that
            # checkpoint (a copy or a moved folder), and only otherwise from where it was saved
            for candidate in ((moved, prefix) if Path(name).is_absolute() else (prefix, moved)):
                if Path(f"{candidate}.index").is_file():
                    return str(candidate)
            raise TFCheckpointError(f"{state}: model_checkpoint_path {name!r} names no checkpoint "
                                    f"({prefix}.index is missing, and so is {moved}.index)")
        indexes = sorted(folder.glob("*.index"))
        if len(indexes) == 1:
            return str(indexes[0])[:-len(".index")]
        if indexes:
            raise TFCheckpointError(f"{folder}: holds {len(indexes)} checkpoints "
                                    f"({', '.join(p.name for p in indexes)}) and no checkpoint file: give the prefix")
        raise TFCheckpointError(f"{folder}: no TF checkpoint in this folder (no checkpoint file, no *.index)")
    raise TFCheckpointError(f"no TF checkpoint at {path} ({path}.index is missing): give the prefix, e.g. "
                            "bert_model.ckpt, or its folder")


def _check(entry: dict, shards: int) -> str | None:
    """What is wrong with a stored entry (one with bytes), or None."""
    if not 0 <= entry["shard_id"] < shards:
        return f"lies in data shard {entry['shard_id']}, but the checkpoint has {shards}"
    if entry["offset"] < 0:
        return f"has a negative offset {entry['offset']}"
    if entry["dtype"] not in DTYPES:
        return None if entry["dtype"] == DT_STRING else \
            f"has dtype {_dtype_name(entry['dtype'])}, which kexue cannot read"
    expected = int(np.prod(entry["shape"], dtype=np.int64)) * _itemsize(entry["dtype"])
    if entry["size"] != expected:
        return (f"holds {entry['size']} bytes, but {_dtype_name(entry['dtype'])} of shape {list(entry['shape'])} "
                f"is {expected}")
    return None


def _read_index(prefix: str) -> tuple[dict, dict[str, dict]]:
    """(header, {tensor name: {dtype, shape, parts}}) of ``prefix.index``; ``parts``: [(entry, region)],
    one entry with region None, or the slices, each with the region of the full tensor it fills."""
    index = f"{prefix}.index"
    try:
        table = dict(read_table(Path(index).read_bytes()))
        if b"" not in table:
            raise Malformed("no bundle header (the empty key)")
        header = _header(table.pop(b""))
        entries = {}
        for key, value in table.items():
            try:
                entries[key] = _entry(value)
            except Malformed as e:
                raise Malformed(f"entry {key!r}: {e}") from None
    except Malformed as e:
        raise TFCheckpointError(f"{index}: {e}") from None
    except OSError as e:
        raise TFCheckpointError(f"{index}: cannot be read ({e.strerror or e})") from None
    if header["endianness"] != 0:
        raise TFCheckpointError(f"{index}: a big-endian checkpoint; only little-endian ones are supported")
    if header["min_consumer"] > 1:
        raise TFCheckpointError(f"{index}: needs a tensor-bundle reader of version {header['min_consumer']} "
                                "(this one reads version 1)")
    if header["num_shards"] < 1:
        raise TFCheckpointError(f"{index}: the bundle header gives {header['num_shards']} data shards")
    tensors, used = {}, set()
    for key, entry in entries.items():
        if key.startswith(b"\x00"):
            continue  # a slice: read through its tensor's entry
        name = key.decode("utf-8", errors="backslashreplace")
        parts = []
        for extents in entry["slices"]:
            if len(extents) != len(entry["shape"]):
                raise TFCheckpointError(f"{index}: tensor {name!r} has a slice of rank {len(extents)}, its shape "
                                        f"{list(entry['shape'])}")
            sub = slice_key(key, extents)
            if sub not in entries:
                raise TFCheckpointError(f"{index}: tensor {name!r} lists slice {extents}, which has no entry")
            used.add(sub)
            region = tuple(slice(0, dim) if length < 0 else slice(start, start + length)
                           for (start, length), dim in zip(extents, entry["shape"]))
            lengths = tuple(r.stop - r.start for r in region)
            if entries[sub]["shape"] != lengths or any(r.stop > dim for r, dim in zip(region, entry["shape"])) \
                    or entries[sub]["dtype"] != entry["dtype"]:
                raise TFCheckpointError(f"{index}: slice {extents} of tensor {name!r} is stored as "
                                        f"{_dtype_name(entries[sub]['dtype'])} of shape {list(entries[sub]['shape'])}")
            parts.append((entries[sub], region))
        if entry["slices"]:
            covered = sum(int(np.prod(e["shape"], dtype=np.int64)) for e, _ in parts)
            if covered != int(np.prod(entry["shape"], dtype=np.int64)):
                raise TFCheckpointError(f"{index}: the slices of tensor {name!r} hold {covered} elements, its "
                                        f"shape {list(entry['shape'])} needs {int(np.prod(entry['shape']))}")
        else:
            parts = [(entry, None)]
        for part, _ in parts:
            problem = _check(part, header["num_shards"])
            if problem:
                raise TFCheckpointError(f"{index}: tensor {name!r} {problem}")
        tensors[name] = {"dtype": entry["dtype"], "shape": entry["shape"], "parts": parts}
    stray = [k for k in entries if k.startswith(b"\x00") and k not in used]
    if stray:
        raise TFCheckpointError(f"{index}: {len(stray)} tensor slices belong to no tensor (first: {stray[0]!r})")
    return header, tensors


def _readable(prefix: str, tensors: dict) -> dict:
    """The tensors to return: bookkeeping strings skipped, other strings refused by name."""
    out = {}
    for name, tensor in tensors.items():
        if tensor["dtype"] == DT_STRING:
            if name in BOOKKEEPING:
                continue
            raise TFCheckpointError(f"{prefix}.index: tensor {name!r} is a string tensor (DT_STRING); kexue "
                                    "reads only numeric and bool tensors")
        out[name] = tensor
    return out


def _shard_path(prefix: str, shard: int, shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{shards:05d}"


def list_variables(prefix: str | Path) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor that ``read_tf_checkpoint`` returns, sorted by name; reads only the
    ``.index`` file."""
    prefix = resolve_prefix(prefix)
    _, tensors = _read_index(prefix)
    return [(name, tensor["shape"]) for name, tensor in _readable(prefix, tensors).items()]


def _read_part(f, path: str, length: int, name: str, entry: dict, verify: bool) -> bytearray:
    end = entry["offset"] + entry["size"]
    if end > length:
        raise TFCheckpointError(f"{path}: truncated: tensor {name!r} needs bytes {entry['offset']}-{end}, "
                                f"the file has {length}")
    buf = bytearray(entry["size"])
    f.seek(entry["offset"])
    if f.readinto(buf) != entry["size"]:
        raise TFCheckpointError(f"{path}: truncated while reading tensor {name!r}")
    if verify and masked_crc32c(buf) != entry["crc32c"]:
        raise TFCheckpointError(f"{path}: checksum mismatch in tensor {name!r} (CRC-32C of bytes "
                                f"{entry['offset']}-{end}): the file is corrupt")
    return buf


def read_tf_checkpoint(prefix: str | Path, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint (``prefix`` as given to ``Saver.save``, or its folder), by name
    (sorted), as ``tf.train.load_checkpoint(prefix).get_tensor(name)`` returns it (bfloat16 as
    ``ml_dtypes.bfloat16``, or widened to float32 without ml_dtypes). ``verify`` checks each stored
    tensor's CRC-32C (200-330 MB/s measured on one shared core)."""
    prefix = resolve_prefix(prefix)
    header, tensors = _read_index(prefix)
    tensors = _readable(prefix, tensors)
    shards = header["num_shards"]
    work: dict[int, list] = {}  # shard -> [(name, entry, region)]
    for name, tensor in tensors.items():
        for entry, region in tensor["parts"]:
            work.setdefault(entry["shard_id"], []).append((name, entry, region))
    for shard, jobs in sorted(work.items()):
        path = _shard_path(prefix, shard, shards)
        if not Path(path).is_file():
            raise TFCheckpointError(f"{path} is missing: data shard {shard} of {shards} of checkpoint {prefix}, "
                                    f"holding {len(jobs)} tensors or slices ({jobs[0][0]!r}, ...)")
    out = {}
    for shard, jobs in sorted(work.items()):
        path = _shard_path(prefix, shard, shards)
        with open(path, "rb") as f:
            length = f.seek(0, 2)
            for name, entry, region in sorted(jobs, key=lambda job: job[1]["offset"]):
                dtype = _numpy_dtype(entry["dtype"])
                array = np.frombuffer(_read_part(f, path, length, name, entry, verify), dtype).reshape(entry["shape"])
                if region is None:
                    out[name] = array
                else:
                    if name not in out:
                        out[name] = np.zeros(tensors[name]["shape"], dtype)
                    out[name][region] = array
    for name in out:
        if DTYPES[tensors[name]["dtype"]] == "bfloat16" and out[name].dtype == np.dtype("<u2"):
            out[name] = (out[name].astype(np.uint32) << 16).view(np.float32)  # exact: bfloat16 = float32's top half
    return {name: out[name] for name in tensors}
