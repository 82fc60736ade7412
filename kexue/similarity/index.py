"""A persistent search index: a corpus embedded once, searched many times without re-embedding it.

An index folder holds::

    index.json          format, dim, count, backend, and the encoder it was built with
                        (its folder and a fingerprint of its weights, so a changed encoder is refused)
    vectors.safetensors [N, d] float32, L2-normalised: inner product = cosine
    texts.jsonl         one {"text", "source", "line"} per vector, in the same order

``SearchIndex.build`` embeds a corpus with an encoder's ``embed(texts) -> [N, d]`` and writes the folder;
``add`` embeds only the new texts and rewrites the folder; ``open`` + ``search`` embed only the queries.
Search is exact (one matmul + top-k, :class:`~kexue.similarity.search.TorchIndex`) or faiss's
``IndexFlatIP`` (:class:`~kexue.similarity.search.FaissIndex`): both return the brute-force top-k.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from kexue.io import MANIFEST, fingerprint, save_safetensors, write_json, write_text
from kexue.similarity.search import build_index

FORMAT = "kexue-index/1"
META, VECTORS, TEXTS = "index.json", "vectors.safetensors", "texts.jsonl"
Embed = Callable[[list[str]], Tensor]


def encoder_fingerprint(folder: str | Path) -> str:
    """The sha256 of what makes an encoder folder's vectors: its weight, tokenizer and settings files, its
    post-processing (whitening file, manifest) and its sentence-transformers modules (pooling, normalize)."""
    folder = Path(folder)
    parts = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".bin", ".txt")
                                                                   or (p.suffix == ".json" and p.name not in
                                                                       ("metrics.json", MANIFEST))))
    parts += sorted(p for d in folder.iterdir() if d.is_dir() and re.fullmatch(r"\d+_\w+", d.name)
                    for p in d.rglob("*") if p.is_file())
    items: list = [(p.relative_to(folder).as_posix(), p) for p in parts]
    if (folder / MANIFEST).is_file():  # its settings (pooling, post-processing), not its list of files: an ONNX
        # export or a new model card joins the folder's unit without changing a vector
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        items.append((MANIFEST, {k: v for k, v in manifest.items() if k != "files"}))
    return fingerprint(items)


@dataclass
class SearchIndex:
    folder: Path
    vectors: Tensor  # [N, d] normalised
    rows: list[dict] = field(default_factory=list)  # {"text", "source", "line"}
    meta: dict = field(default_factory=dict)

    # -- writing -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, folder: str | Path, texts: Sequence[str], embed: Embed, encoder: str | Path,
              sources: Sequence[dict] | None = None, backend: str = "torch", overwrite: bool = False) -> "SearchIndex":
        """Embed ``texts`` and write a new index folder (refused if one exists, unless ``overwrite``)."""
        folder = Path(folder)
        if (folder / META).exists() and not overwrite:
            raise ValueError(f"{folder} already holds an index: `kexue index add` adds to it, --overwrite rebuilds it")
        if backend not in ("torch", "faiss"):
            raise ValueError(f"unknown index backend {backend!r}: torch or faiss")
        rows = _rows(texts, sources)
        vectors = _normalised(embed([r["text"] for r in rows]), len(rows))
        meta = {"format": FORMAT, "dim": int(vectors.shape[1]), "count": len(rows), "backend": backend,
                "encoder": {"path": str(Path(encoder).resolve()), "fingerprint": encoder_fingerprint(encoder)}}
        index = cls(folder, vectors, rows, meta)
        index._write()
        return index

    def add(self, texts: Sequence[str], embed: Embed, sources: Sequence[dict] | None = None) -> int:
        """Embed only ``texts`` and append them; returns how many were added."""
        rows = _rows(texts, sources)
        new = _normalised(embed([r["text"] for r in rows]), len(rows))
        if new.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"{self.folder}: the encoder gives {new.shape[1]}-dim vectors, the index holds "
                             f"{self.vectors.shape[1]}-dim ones")
        self.vectors = torch.cat([self.vectors, new])
        self.rows += rows
        self.meta["count"] = len(self.rows)
        self._write()
        return len(rows)

    def _write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_safetensors({"vectors": self.vectors.contiguous()}, self.folder / VECTORS)
        write_text(self.folder / TEXTS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows))
        write_json(self.folder / META, self.meta)  # last: a folder without it is no index

    # -- reading -------------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path) -> "SearchIndex":
        """Read an index folder; every part is checked against the others (one-line errors naming the file)."""
        folder = Path(folder)
        meta_path = folder / META
        if not meta_path.is_file():
            raise ValueError(f"{folder} is not a search index (no {META}); build one with `kexue index build`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: field 'format' must be {FORMAT!r}")
        for name, kind in (("dim", int), ("count", int), ("backend", str), ("encoder", dict)):
            if not isinstance(meta.get(name), kind):
                raise ValueError(f"{meta_path}: field {name!r} must be {kind.__name__}")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            vectors = load_file(str(folder / VECTORS))["vectors"]
        except (OSError, SafetensorError, KeyError) as e:
            raise ValueError(f"{folder / VECTORS}: unreadable ({e})") from None
        rows = []
        for n, line in enumerate((folder / TEXTS).read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line)
                assert isinstance(row, dict) and isinstance(row.get("text"), str)
            except (json.JSONDecodeError, AssertionError):
                raise ValueError(f"{folder / TEXTS}:{n}: expected a JSON object with a 'text' string") from None
            rows.append(row)
        if tuple(vectors.shape) != (meta["count"], meta["dim"]) or len(rows) != meta["count"]:
            raise ValueError(f"{folder}: {META} says {meta['count']} x {meta['dim']}, {VECTORS} holds "
                             f"{tuple(vectors.shape)} and {TEXTS} {len(rows)} rows")
        return cls(folder, vectors.float(), rows, meta)

    def check_encoder(self, encoder: str | Path | None = None) -> Path:
        """The encoder folder to embed queries with: the recorded one (or ``encoder``), refused if its weights
        are not the ones the index was built with."""
        path = Path(encoder or self.meta["encoder"]["path"])
        if not path.is_dir():
            raise ValueError(f"{self.folder}: its encoder {path} is gone; rebuild the index or pass --model")
        if encoder_fingerprint(path) != self.meta["encoder"]["fingerprint"]:
            raise ValueError(f"{self.folder}: the encoder {path} is not the one the index was built with "
                             "(its weights changed); rebuild the index with `kexue index build --overwrite`")
        return path

    def search(self, queries: Tensor, k: int) -> list[list[dict]]:
        """For each query vector, the ``k`` nearest rows (``{"text", "source", "line", "score"}``), best first."""
        index = build_index(self.vectors, self.meta.get("backend", "torch"), normalize=False)
        scores, idx = index.search(torch.nn.functional.normalize(queries.float(), dim=-1), k)
        return [[{**self.rows[j], "score": s} for s, j in zip(srow, jrow)]
                for srow, jrow in zip(scores.tolist(), idx.tolist())]

    def __len__(self) -> int:
        return len(self.rows)


def _rows(texts: Sequence[str], sources: Sequence[dict] | None) -> list[dict]:
    if not texts:
        raise ValueError("no texts to index")
    if sources is not None and len(sources) != len(texts):
        raise ValueError("texts and sources differ in length")
    return [{"text": t, **(sources[i] if sources else {"line": i + 1})} for i, t in enumerate(texts)]


def _normalised(vectors: Tensor, n: int) -> Tensor:
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"the encoder returned shape {tuple(vectors.shape)} for {n} texts")
    return torch.nn.functional.normalize(vectors.float(), dim=-1)


__all__ = ["SearchIndex", "encoder_fingerprint"]
