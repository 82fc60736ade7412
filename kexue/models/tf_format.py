"""The storage layers under TensorFlow's checkpoints, in numpy: CRC-32C, the protobuf wire format and
LevelDB-style SSTables (the ``.index`` file of a tensor bundle; see ``kexue.models.tf_checkpoint``).

CRC-32C (Castagnoli polynomial, reflected 0x82F63B78), as LevelDB and TensorFlow store it::

    crc  = CRC-32C(bytes)                               (register starts at 0xFFFFFFFF, result inverted)
    mask = ((crc >> 15) | (crc << 17)) + 0xa282ead8     (mod 2^32)

It runs in numpy: the data is cut into equal lanes whose raw CRCs (register starting at 0) advance
together, 4 bytes a step through two 65536-entry tables, and are merged pairwise by the linearity of the
CRC over GF(2): ``raw(A ‖ B) = Z_|B|(raw(A)) ⊕ raw(B)``, with ``Z_n`` the register's advance over ``n`` zero
bytes. Leading zero bytes leave a raw CRC unchanged, so the data is padded in front with zeros and a
4-byte word that brings the register to 0xFFFFFFFF (200-330 MB/s measured on one shared core).

An SSTable: data blocks hold sorted key/value entries (``shared | non_shared | value_len`` varints, the
key's first ``shared`` bytes taken from the previous key, then the key's tail and the value; then the
restart offsets, uint32 each, and their count); each block on disk is followed by a 1-byte compression
type and the masked CRC-32C of block + type. The index block maps each data block's last key to its
``BlockHandle`` (varint offset, varint size); the 48-byte footer holds the metaindex and index handles,
padding, and the magic number 0xdb4775248b80fb57 (little-endian fixed64).

Errors are ``Malformed`` without a file name: the caller, which knows the file, names it.
"""
from __future__ import annotations

import sys

import numpy as np

MAGIC = 0xDB4775248B80FB57  # kTableMagicNumber of LevelDB / TensorFlow tables
FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes + the 8-byte magic


class Malformed(Exception):
    """A format error; the caller adds the file name."""


# ---------------------------------------------------------------------------------------------- CRC-32C

_POLY = 0x82F63B78
_LANE = 256  # bytes per lane of the vectorised CRC
_MAX_LANES = 1 << 12  # lanes per piece: pieces of at most 1 MiB (cache-sized; measured fastest)


def _byte_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    return t


_T = _byte_table()


def _zero_bytes(x: np.ndarray, n: int) -> np.ndarray:
    """Z_n: the raw register ``x`` advanced over ``n`` zero bytes (elementwise)."""
    x = np.asarray(x, dtype=np.uint32)
    for _ in range(n):
        x = _T[x & 0xFF] ^ (x >> 8)
    return x


def _unzero_byte(y: int) -> int:
    """Z_1⁻¹: the top byte of ``_T[i]`` is a bijection of ``i``, so one step back is unique."""
    i = int(np.flatnonzero((_T >> 24) == (y >> 24))[0])
    return (((y ^ int(_T[i])) << 8) | i) & 0xFFFFFFFF


_WORD = np.arange(1 << 16, dtype=np.uint32)
_LO, _HI = _zero_bytes(_WORD, 4), _zero_bytes(_WORD << 16, 4)  # Z_4 on the low / high 16 bits
_START = _unzero_byte(_unzero_byte(_unzero_byte(_unzero_byte(0xFFFFFFFF))))  # Z_4(_START) = 0xFFFFFFFF
_START_BYTES = np.frombuffer(_START.to_bytes(4, "little"), np.uint8)
_SHIFTS: list[np.ndarray] = []  # _SHIFTS[k]: byte tables [4, 256] of Z_n for n = _LANE * 2^k


def _shift_tables(k: int) -> np.ndarray:
    """Byte tables of the linear map Z_{_LANE·2^k}: Z(x) = ⊕_j tables[j][byte j of x]."""
    while len(_SHIFTS) <= k:
        if not _SHIFTS:
            columns = _zero_bytes(np.uint32(1) << np.arange(32, dtype=np.uint32), _LANE)
        else:  # Z_2n = Z_n ∘ Z_n
            columns = _apply(_SHIFTS[-1], _apply(_SHIFTS[-1], np.uint32(1) << np.arange(32, dtype=np.uint32)))
        bits = (np.arange(256)[:, None] >> np.arange(8)) & 1  # [256, 8]
        tables = np.zeros((4, 256), np.uint32)
        for j in range(4):
            for b in range(8):
                tables[j] ^= np.where(bits[:, b] == 1, columns[8 * j + b], 0).astype(np.uint32)
        _SHIFTS.append(tables)
    return _SHIFTS[k]


def _apply(tables: np.ndarray, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.uint32)
    return (tables[0][x & 0xFF] ^ tables[1][(x >> 8) & 0xFF] ^ tables[2][(x >> 16) & 0xFF]
            ^ tables[3][x >> 24])


def _raw_piece(piece: np.ndarray, lanes: int) -> int:
    """The raw CRC (register from 0, no final inversion) of ``lanes * _LANE`` bytes."""
    words = np.ascontiguousarray(piece.view("<u4").reshape(lanes, _LANE // 4).T)  # [words per lane, lanes]
    r, x, lo, hi = (np.zeros(lanes, np.uint32) for _ in range(4))
    halves = x.view(np.uint16).reshape(lanes, 2)  # the 16-bit halves of x, without copies
    low = 0 if sys.byteorder == "little" else 1
    for row in words:
        np.bitwise_xor(r, row, out=x)
        np.take(_LO, halves[:, low], out=lo, mode="clip")  # indices < 65536: no bounds to check
        np.take(_HI, halves[:, 1 - low], out=hi, mode="clip")
        np.bitwise_xor(lo, hi, out=r)
    k = 0
    while r.size > 1:  # lanes of _LANE·2^k bytes merged pairwise
        r = _apply(_shift_tables(k), r[0::2]) ^ r[1::2]
        k += 1
    return int(r[0])


def crc32c(data) -> int:
    """CRC-32C (Castagnoli) of ``data`` (bytes-like or a numpy array's raw bytes)."""
    buf = np.frombuffer(memoryview(data).cast("B"), np.uint8) if not isinstance(data, np.ndarray) else \
        np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    lanes = 1
    while lanes < _MAX_LANES and lanes * _LANE < buf.size + 4:
        lanes *= 2
    size = lanes * _LANE
    head = buf.size % size  # the bytes before the whole pieces, read behind the start word
    lanes_first = 1
    while lanes_first * _LANE < head + 4:
        lanes_first *= 2
    first = np.zeros(lanes_first * _LANE, np.uint8)
    first[first.size - head - 4:first.size - head] = _START_BYTES
    first[first.size - head:] = buf[:head]
    r = _raw_piece(first, lanes_first)
    if head < buf.size:
        shift = _shift_tables(lanes.bit_length() - 1)  # Z over one whole piece
        for start in range(head, buf.size, size):
            r = int(_apply(shift, np.uint32(r))) ^ _raw_piece(buf[start:start + size], lanes)
    return r ^ 0xFFFFFFFF


def masked_crc32c(data) -> int:
    """The masked CRC-32C that TensorFlow and LevelDB store: ((crc >> 15) | (crc << 17)) + 0xa282ead8."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------ protobuf wire format

def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """One base-128 varint at ``pos``: (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise Malformed("varint longer than 10 bytes")


def signed(value: int) -> int:
    """An int32 / int64 field: negative values are sent as 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def fields(buf: bytes, what: str):
    """(field number, value) of every field of a serialised protobuf message: varints and fixed ints as
    int, length-delimited fields as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise Malformed(f"truncated {what}")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == 2:
            length, pos = varint(buf, pos)
            if pos + length > len(buf):
                raise Malformed(f"truncated {what}")
            value, pos = bytes(buf[pos:pos + length]), pos + length
        else:
            raise Malformed(f"malformed {what} (wire type {wire})")
        yield number, value


# ------------------------------------------------------------------------------------------- the SSTable

def block_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    """A BlockHandle: varint offset, varint size."""
    offset, pos = varint(buf, pos)
    size, pos = varint(buf, pos)
    return (offset, size), pos


def read_block(data: bytes, handle: tuple[int, int], what: str) -> bytes:
    """The contents of the block at ``handle``, its trailer checked: type 0 (uncompressed) and the masked
    CRC-32C of contents + type byte."""
    offset, size = handle
    if offset + size + 5 > len(data):
        raise Malformed(f"truncated: the {what} at offset {offset} needs {offset + size + 5} bytes, "
                         f"the file has {len(data)}")
    kind = data[offset + size]
    if kind != 0:
        name = {1: "snappy", 2: "zlib"}.get(kind, f"type {kind}")
        raise Malformed(f"the {what} at offset {offset} is {name}-compressed; kexue reads only uncompressed "
                         "checkpoint indexes (what TensorFlow writes)")
    stored = int.from_bytes(data[offset + size + 1:offset + size + 5], "little")
    if masked_crc32c(data[offset:offset + size + 1]) != stored:
        raise Malformed(f"checksum mismatch in the {what} at offset {offset}: the file is corrupt")
    return data[offset:offset + size]


def block_entries(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a block: entries up to the restart array, keys prefix-compressed."""
    if len(block) < 4:
        raise Malformed(f"{what} shorter than its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 * (1 + restarts)
    if end < 0:
        raise Malformed(f"{what} has {restarts} restart points, more than fit in {len(block)} bytes")
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = varint(block, pos)
        fresh, pos = varint(block, pos)
        length, pos = varint(block, pos)
        if shared > len(key) or pos + fresh + length > end:
            raise Malformed(f"corrupt entry in {what} at byte {pos}")
        key = key[:shared] + block[pos:pos + fresh]
        entries.append((key, block[pos + fresh:pos + fresh + length]))
        pos += fresh + length
    return entries


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable, in order: footer -> index block -> data blocks."""
    if len(data) < FOOTER_SIZE:
        raise Malformed(f"not a TensorFlow checkpoint index ({len(data)} bytes, shorter than the "
                         f"{FOOTER_SIZE}-byte table footer)")
    magic = int.from_bytes(data[-8:], "little")
    if magic != MAGIC:
        raise Malformed(f"not a TensorFlow checkpoint index (bad magic number {magic:#018x}, expected "
                         f"{MAGIC:#018x})")
    footer = data[-FOOTER_SIZE:-8]
    _, pos = block_handle(footer, 0)  # the metaindex block (filters): TF writes none, nothing to read
    index, _ = block_handle(footer, pos)
    entries = []
    for number, (_, value) in enumerate(block_entries(read_block(data, index, "index block"), "index block")):
        handle, _ = block_handle(value, 0)
        block = read_block(data, handle, f"data block {number}")
        entries += block_entries(block, f"data block {number}")
    return entries


