r"""``kexue whiten ENCODER --corpus FILE [--beta B --gamma G --k K]``: fit BERT-whitening on an encoder's
vectors of a corpus and store it in the encoder folder as its post-processing.

《你可能不需要BERT-flow：一个线性变换媲美BERT-flow》 and 《当BERT-whitening引入超参数：总有一款适合你》
(:mod:`kexue.similarity.whitening`): with μ the corpus mean and Σ_β = U_β Λ_β U_βᵀ,

.. math:: \tilde x = (x - \beta\mu)\,U_\beta\,\Lambda_\beta^{-\gamma/2}, \quad \text{first } k \text{ columns}

fitted on the encoder's vectors *before* any whitening it already has (re-running replaces it). The folder is
rewritten as one unit (:func:`kexue.io.write_folder`): its files, ``whitening.safetensors``, the manifest's
``post_processing.whitening`` (β, γ, k) and the sentence-transformers ``3_Dense`` module holding the same map;
``kexue embed / search / index build / serve`` then apply it. An index built before is refused afterwards
(the encoder changed: :func:`kexue.similarity.index.encoder_fingerprint`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from kexue.io import folder_info, read_json, read_manifest, write_folder
from kexue.recipes import args as at
from kexue.recipes.folder import WHITENING_FILE, check_model_folder, whitening_step
from kexue.recipes.st_folder import encoder_spec, st_module_file, write_st_modules


def folder_files(directory: Path) -> list[str]:
    """The files of a model folder: its manifest's, or (no manifest) every plain file not hidden."""
    manifest = read_manifest(directory)
    if manifest is not None:
        return list(manifest["files"])
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def store_whitening(directory: str | Path, whitening) -> Path:
    """Rewrite the encoder folder ``directory`` as one unit with ``whitening`` as its post-processing
    (replacing any it had); a folder without manifest (sentence-transformers, older kexue) gets one."""
    directory = Path(directory)
    info = check_model_folder(directory)
    if info.kind != "encoder":
        raise ValueError(f"{directory} is a {info.kind} folder, not a sentence encoder")
    spec = encoder_spec(directory, info.settings)
    post = {"normalize": {}} if spec.normalize else {}
    post["whitening"] = whitening_step(whitening)
    new = folder_info("encoder", labels=info.labels, pooling=spec.pooling, post_processing=post)
    keep = [rel for rel in folder_files(directory) if rel != WHITENING_FILE and not st_module_file(rel)]
    config = read_json(directory / "config.json")
    hidden, positions = config.get("hidden_size", config.get("d_model")), config.get("max_position_embeddings")
    maxlen = spec.maxlen or 256
    with write_folder(directory, new, overwrite=True) as stage:
        for rel in keep:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(directory / rel, stage / rel)
        whitening.save(stage / WHITENING_FILE)
        write_st_modules(stage, new, int(hidden), min(maxlen, positions) if isinstance(positions, int) else maxlen,
                         include_prompt=spec.include_prompt)
    return directory


def main(argv: list[str] | None = None) -> int:
    p = at.ArgumentParser(prog="kexue whiten", description="Fit BERT-whitening x̃ = (x − β·μ)·U·Λ^(−γ/2) (first k "
                          "columns) on an encoder's vectors of a corpus and store it in the encoder folder: embed, "
                          "search, index build and serve then apply it.")
    p.add_argument("model", type=at.model_dir, help="encoder folder (kexue or sentence-transformers); rewritten")
    p.add_argument("--corpus", type=at.input_file, required=True, metavar="FILE", help="one sentence per line")
    p.add_argument("--beta", type=at.finite_float, default=1.0, help="centring β (1: subtract the mean, 0: none)")
    p.add_argument("--gamma", type=at.finite_float, default=1.0, help="scaling γ (1: unit variance, 0: rotation only)")
    p.add_argument("--k", type=at.positive_int, default=None, help="dimensions kept (default: all)")
    p.add_argument("--threads", type=at.positive_int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    import torch

    from kexue.recipes.predictor import load
    from kexue.similarity.whitening import Whitening

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = [ln.strip() for ln in Path(args.corpus).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if len(texts) < 2:
        raise at.UsageError(f"--corpus {args.corpus}: whitening needs at least 2 sentences, got {len(texts)}")
    predictor = load(args.model)
    if not hasattr(predictor, "embed") or not hasattr(predictor, "spec"):
        raise at.UsageError(f"{args.model} is a {predictor.task} model, not a sentence encoder")
    predictor.progress = True
    raw = predictor.embed(texts, post_processing=False)
    dim = raw.shape[1]
    if args.k is not None and args.k > dim:
        raise at.UsageError(f"--k {args.k}: the encoder's vectors have {dim} dimensions")
    whitening = Whitening.fit(raw, args.beta, args.gamma, args.k)
    store_whitening(args.model, whitening)
    print(f"kexue whiten: fitted on {len(texts)} sentences (β={args.beta}, γ={args.gamma}, k={args.k or dim}) "
          f"-> {args.model}")
    return 0
