"""The model folder every program leaves (task recipes, similarity encoders, the demo's encoders), written as
one unit by :func:`kexue.io.write_folder`, and checked before :func:`kexue.load` builds anything from it.

Layout:

* ``manifest.json`` — written last: format and version, ``kind`` (``task``, ``encoder``, ``generator``, ...),
  ``task``, ``labels``, ``pooling``, ``post_processing`` and every file's size and sha256
  (:func:`kexue.io.folder_info`); the task and labels are stored here and nowhere else;
* ``config.json`` + ``model.safetensors`` — the Transformer in the HF layout (``transformers`` loads it),
  with the ``"kexue"`` block: ``family``, ``application``, ``with_mlm``, ``cond_dim``;
* ``vocab.txt`` + ``tokenizer_config.json``;
* ``head.safetensors`` — the task head (classifier, GlobalPointer, CRF, class embeddings), if any;
* ``task.json`` — ``{"settings": ...}``, what the predictor needs to repeat the recipe's evaluation exactly
  (head type, maxlen, decoding options);
* ``metrics.json``, ``loss.png`` (training loss per step), ``README.md`` (a short model card) and
  ``eval_predictions.jsonl`` (the recipe's evaluation predictions, in the format of ``kexue predict``);
* ``whitening.safetensors`` — an encoder's BERT-whitening, recorded as its ``post_processing`` (after its
  ``normalize`` step);
* an encoder's sentence-transformers modules (``modules.json``, ``1_Pooling/``, ``2_Normalize/``, ``3_Dense/``
  for the whitening, ``sentence_bert_config.json``; :mod:`kexue.recipes.st_folder`), consistent with the
  manifest's ``pooling`` and ``post_processing``, so ``SentenceTransformer(folder)`` gives the same vectors.

A folder written by an older kexue (no manifest; task and labels in both ``config.json``'s ``"kexue"`` block
and ``task.json``) still loads: both copies must agree. :func:`check_model_folder` cross-checks every
folder, with or without manifest: the manifest's sizes and hashes, typed JSON fields, ``vocab.txt`` rows
= the embedding rows of the weights (read from the safetensors header), no duplicate token, the labels =
the head's output rows, no truncated safetensors; each failure is one line naming the file and field.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from kexue.io import (MANIFEST, FolderError, atomic_write, check_folder, check_type, folder_info, read_json,
                      recover_folder, safetensors_header, save_safetensors, write_folder, write_json, write_text)
from kexue.models import Transformer, build_model, family_of
from kexue.models.checkpoints import CheckpointError, save_pretrained
from kexue.models.weights import LoadReport, check_fit
from kexue.text.tokenizer import Tokenizer, load_vocab

TASK_FILE, HEAD_FILE, WHITENING_FILE = "task.json", "head.safetensors", "whitening.safetensors"
GENERATOR_APPLICATIONS = ("lm", "unilm", "seq2seq")
#: the predictor (a key of :data:`kexue.recipes.TASKS`) of each kind of folder that has no task of its own
KIND_PREDICTOR = {"encoder": "encoder", "generator": "generate", "custom": "custom"}
USED_BY = {"diffusion": "`kexue diffusion` (load it with kexue.diffusion.folder.load_model)",
           "gan": "`kexue gan` (load it with kexue.generative.gan_train.load_gan)"}
FileContent = Callable[[Path], Any] | str | dict | list


def head_state(module: nn.Module, backbone: str) -> dict[str, torch.Tensor]:
    """The task module's tensors outside its Transformer (attribute ``backbone``)."""
    return {k: v.detach().contiguous() for k, v in module.state_dict().items() if not k.startswith(backbone + ".")}


def save_model_folder(out: str | Path, info: dict[str, Any], *, backbone: nn.Module | None = None,
                      tokenizer: Tokenizer | None = None, head: dict[str, torch.Tensor] | None = None,
                      settings: dict[str, Any] | None = None, files: dict[str, FileContent] | None = None,
                      overwrite: bool = True) -> Path:
    """Write a model folder as one unit (:func:`kexue.io.write_folder`; ``info`` from
    :func:`kexue.io.folder_info`): the Transformer ``backbone`` through ``save_pretrained`` with its
    ``tokenizer``, ``head`` tensors, ``task.json`` with ``settings``, and ``files`` (name -> a function
    writing that path, text, or a JSON value). The folder is complete or not there: never half of it."""
    out = Path(out)
    with write_folder(out, info, overwrite=overwrite) as stage:
        if backbone is not None:
            save_pretrained(backbone, stage, tokenizer)
        elif tokenizer is not None:
            tokenizer.save(stage)
        if head:
            save_safetensors(head, stage / HEAD_FILE)
        if settings is not None:
            write_json(stage / TASK_FILE, {"settings": settings})
        for name, content in (files or {}).items():
            path = stage / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if callable(content):
                content(path)
            elif isinstance(content, str):
                write_text(path, content)
            else:
                write_json(path, content)
        if info.get("kind") == "encoder" and backbone is not None:  # sentence-transformers reads it too
            from kexue.recipes.st_folder import write_st_modules

            config = getattr(backbone, "config", None)
            positions = getattr(config, "max_position_embeddings", None)
            maxlen = (settings or {}).get("maxlen") or 256
            write_st_modules(stage, info, int(config.hidden_size),
                             min(maxlen, positions) if isinstance(positions, int) else maxlen)
    return out


def save_task_model(out: Path, task: str, backbone: Transformer, tokenizer: Tokenizer, head: dict[str, torch.Tensor],
                    labels: list[str] | None, settings: dict[str, Any], metrics: dict[str, Any],
                    step_losses: list[float], card: dict[str, Any], predictions: list[dict] | None = None,
                    overwrite: bool = True, extra: dict[str, FileContent] | None = None) -> Path:
    """Write the self-contained folder of a trained task model (see the module docstring), with the
    evaluation ``predictions`` as ``eval_predictions.jsonl`` and ``extra`` files of the task (e.g. a sample
    grid); ``task="encoder"``: a sentence encoder."""
    kind = "encoder" if task == "encoder" else "task"
    info = folder_info(kind, None if kind == "encoder" else task, labels,
                       pooling={"encoder": "mean", "classify": "cls"}.get(task),
                       post_processing={"normalize": {}} if kind == "encoder" else None)
    files: dict[str, FileContent] = {
        "metrics.json": metrics,
        "loss.png": lambda path: plot_loss(step_losses, path, f"kexue {task}"),
        "README.md": model_card(task, labels, settings, metrics, card)}
    if predictions is not None:
        files["eval_predictions.jsonl"] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in predictions)
    files.update(extra or {})
    return save_model_folder(out, info, backbone=backbone, tokenizer=tokenizer, head=head, settings=settings,
                             files=files, overwrite=overwrite)


def whitening_step(whitening: Any) -> dict[str, Any]:
    """The manifest's ``post_processing.whitening`` record of a fitted Whitening (its file, β, γ, k, dim)."""
    return {"file": WHITENING_FILE, "beta": float(whitening.beta), "gamma": float(whitening.gamma),
            "k": whitening.k, "dim": int(whitening.mu.numel())}


def save_encoder(out: str | Path, model: nn.Module, tokenizer: Tokenizer, *, maxlen: int | None = None,
                 whitening: Any = None, files: dict[str, FileContent] | None = None, overwrite: bool = True,
                 pooling: str = "mean", normalize: bool = True) -> Path:
    """A sentence-encoder folder (``kexue embed / search / serve``, and ``SentenceTransformer(out)``): the
    token vectors pooled by ``pooling`` (:func:`kexue.heads.pooling.pool`), L2-normalised if ``normalize``;
    a :class:`~kexue.similarity.whitening.Whitening` is stored as its post-processing (``whitening.safetensors``
    + its β, γ, k in the manifest), applied after the normalisation."""
    post: dict[str, dict] = {"normalize": {}} if normalize else {}
    files = dict(files or {})
    if whitening is not None:
        post["whitening"] = whitening_step(whitening)
        files[WHITENING_FILE] = whitening.save
    return save_model_folder(out, folder_info("encoder", pooling=pooling, post_processing=post), backbone=model,
                             tokenizer=tokenizer, settings={"maxlen": maxlen} if maxlen else None, files=files,
                             overwrite=overwrite)


def plot_loss(losses: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def model_card(task: str, labels: list[str] | None, settings: dict, metrics: dict, card: dict) -> str:
    scores = {k: v for k, v in metrics.items() if isinstance(v, float) and k not in ("seconds",)}
    lines = [f"# kexue {task} model", "", f"Trained by `{card.get('command', 'kexue ' + task)}`.", "",
             "## Data", ""]
    lines += [f"- {k}: {v}" for k, v in card.get("data", {}).items()]
    if labels:
        shown = ", ".join(map(str, labels[:20])) + (" …" if len(labels) > 20 else "")
        lines += [f"- labels ({len(labels)}): {shown}"]
    lines += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in {**card.get("settings", {}), **settings}.items()]
    lines += ["", "## Scores", ""] + [f"- {k}: {v:.4f}" for k, v in scores.items()]
    if card.get("training"):  # the run: dev curve, which weights were saved, early stopping, before/after
        lines += ["", "## Training", ""] + [f"- {line}" for line in card["training"]]
    lines += ["", "![training loss](loss.png)", "", "## Use", "", "```",
              f"kexue predict {card.get('out', 'DIR')} \"...\"",
              f"python -c \"import kexue; print(kexue.load('{card.get('out', 'DIR')}').predict([...]))\"", "```", ""]
    return "\n".join(lines)


# --- reading a folder back ------------------------------------------------------------------------------

@dataclass
class FolderInfo:
    """What :func:`check_model_folder` found: ``predictor`` is the key of :data:`kexue.recipes.TASKS`
    (None for diffusion / GAN folders) and ``predictor_class`` the class that serves the folder (for a
    ``custom`` folder, the one of its :class:`~kexue.recipes.custom.Task`, named by ``task_module`` or
    registered in this process); ``manifest`` None for a folder of an older kexue."""

    directory: Path
    kind: str
    task: str | None
    labels: list[str] | None
    predictor: str | None
    settings: dict[str, Any] | None = None
    pooling: str | None = None
    post_processing: dict[str, dict] = field(default_factory=dict)
    manifest: dict | None = None
    task_module: str | None = None
    predictor_class: Any = None


def _config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise FolderError(f"{directory} is not a model folder (no config.json)")
    config = read_json(path)
    check_type(config, "object", path, "(top level)")
    block = check_type(config.get("kexue"), "object or null", path, "kexue") or {}
    for key, spec in (("task", "string or null"), ("labels", "list of strings or null"),
                      ("family", "string or null"), ("application", "string or null")):
        check_type(block.get(key), spec, path, f"kexue.{key}")
    if "vocab_size" in config:
        check_type(config["vocab_size"], "integer", path, "vocab_size")
    return config


def _task_json(directory: Path) -> dict[str, Any] | None:
    path = directory / TASK_FILE
    if not path.exists():
        return None
    info = check_type(read_json(path), "object", path, "(top level)")
    check_type(info.get("settings"), "object", path, "settings")
    check_type(info.get("task"), "string or null", path, "task")
    check_type(info.get("labels"), "list of strings or null", path, "labels")
    return info


def _old_format(directory: Path, config: dict) -> FolderInfo:
    """A folder without manifest: the task and labels of config.json's kexue block and task.json must agree."""
    block = config.get("kexue") or {}
    if "kexue" not in config and "model_type" not in config and {"kind", "channels", "width"} <= set(config):
        return FolderInfo(directory, "diffusion", None, None, None)  # kexue diffusion --out, before manifests
    tj = _task_json(directory)
    cfg, tjp = directory / "config.json", directory / TASK_FILE
    if tj is not None and "task" in tj and tj["task"] != block.get("task"):
        raise FolderError(f"{cfg}: field 'kexue.task' is {block.get('task')!r} but {tjp} says {tj['task']!r} "
                          "(a partly written folder?)")
    if tj is not None and "labels" in tj and "labels" in block and tj["labels"] != block["labels"]:
        raise FolderError(f"{cfg}: field 'kexue.labels' {block['labels']} disagrees with {tjp}'s labels {tj['labels']}")
    task = block.get("task")
    labels = (tj or {}).get("labels", block.get("labels"))
    settings = tj["settings"] if tj is not None else None
    if task and task != "encoder":
        return FolderInfo(directory, "task", task, labels, task, settings)
    generator = not task and (block.get("application") in GENERATOR_APPLICATIONS or block.get("family") == "t5")
    kind = "generator" if generator else "encoder"
    return FolderInfo(directory, kind, None, labels, KIND_PREDICTOR[kind], settings)


def check_model_folder(directory: str | Path) -> FolderInfo:
    """Check ``directory`` before anything is built from it (see the module docstring, and the task's own
    checks: :func:`check_task`); returns what it holds. What a killed save left beside the folder is finished
    or removed first (:func:`kexue.io.recover_folder`): an overwrite killed between its two renames, a run
    folder it was carrying over; the folder itself is always complete, so a save still running, or a
    read-only place, leaves it as it is."""
    directory = Path(directory)
    if not os.path.lexists(directory):
        recover_folder(directory)
    else:
        try:
            recover_folder(directory)
        except (FolderError, OSError):
            pass
    if not directory.is_dir():
        raise FolderError(f"{directory}: no such model folder")
    manifest = check_folder(directory)
    if manifest is not None and manifest["kind"] in USED_BY:
        return FolderInfo(directory, manifest["kind"], None, manifest["labels"], None, manifest=manifest)
    config = _config(directory)
    if manifest is None:
        info = _old_format(directory, config)
        if info.kind in USED_BY:
            return info
    else:
        tj = _task_json(directory)
        predictor = manifest["task"] if manifest["kind"] == "task" else KIND_PREDICTOR.get(manifest["kind"])
        info = FolderInfo(directory, manifest["kind"], manifest["task"], manifest["labels"], predictor,
                          tj["settings"] if tj else None, manifest["pooling"], manifest["post_processing"], manifest,
                          manifest.get("task_module"))
    if (directory / "tokenizer_config.json").exists():
        check_type(read_json(directory / "tokenizer_config.json"), "object", directory / "tokenizer_config.json",
                   "(top level)")
    for path in sorted(directory.glob("*.safetensors")):
        safetensors_header(path)  # a truncated file is named here, not deep inside a loader
    _check_vocab(directory, config)
    _check_post_processing(directory, config, info)
    _check_predictor(info)
    return info


def _check_predictor(info: FolderInfo) -> None:
    from kexue.recipes import TASKS

    if info.predictor not in TASKS:
        where = info.directory / (MANIFEST if info.manifest is not None else "config.json")
        raise FolderError(f"{where}: unknown task {info.predictor!r} (known: {', '.join(sorted(TASKS))})")
    cls = TASKS[info.predictor].predictor_class().for_folder(info)  # a custom folder: its own task's class
    check_task(info, cls)
    info.predictor_class = cls
    if info.pooling not in (None, *cls.poolings):
        raise FolderError(f"{info.directory / MANIFEST}: field 'pooling' is {info.pooling!r}; the "
                          f"{info.predictor} predictor pools by {', '.join(cls.poolings) or 'nothing'}")


def embedding_rows(directory: Path) -> tuple[int, Path] | None:
    """Rows of the token embedding in the folder's weights and the file holding it (from safetensors headers;
    None when the weights are not safetensors or no tensor is recognisably the token embedding)."""
    names = ("embeddings.word_embeddings.weight", "wte.weight", "shared.weight")
    files = sorted(directory.glob("model*.safetensors"))
    for path in files:
        for name, t in safetensors_header(path).items():
            if (name in names or name.endswith(tuple("." + n for n in names))) and t.get("shape"):
                return int(t["shape"][0]), path
    return None


def _check_vocab(directory: Path, config: dict) -> None:
    path = directory / "vocab.txt"
    if not path.is_file():
        return
    tokens = load_vocab(path, FolderError)
    seen: dict[str, int] = {}
    for i, tok in enumerate(tokens, 1):
        if tok in seen:
            raise FolderError(f"{path}: token {tok!r} on lines {seen[tok]} and {i} (a duplicated line shifts every "
                              "later id)")
        seen[tok] = i
    rows = embedding_rows(directory)
    if rows is not None and rows[0] != len(tokens):
        raise FolderError(f"{path}: {len(tokens)} tokens, but the token embedding in {rows[1].name} has {rows[0]} rows")
    size = config.get("vocab_size")
    if size is not None and size != len(tokens):
        raise FolderError(f"{path}: {len(tokens)} tokens, but config.json's field 'vocab_size' is {size}")


def _check_post_processing(directory: Path, config: dict, info: FolderInfo) -> None:
    step = info.post_processing.get("whitening")
    if step is None:
        return
    path = directory / step["file"]
    header, meta = safetensors_header(path, metadata=True)
    mu = header.get("mu", {}).get("shape")
    hidden = config.get("hidden_size", config.get("d_model"))
    if not mu or (hidden is not None and mu[0] != hidden):
        raise FolderError(f"{path}: whitening of dimension {mu[0] if mu else '?'} does not fit the "
                          f"encoder's hidden_size {hidden}")
    try:
        params = json.loads(meta.get("params", "{}"))
    except json.JSONDecodeError:
        raise FolderError(f"{path}: its metadata 'params' is not JSON") from None
    for key in ("beta", "gamma", "k"):
        if step.get(key) != params.get(key):
            raise FolderError(f"{directory / MANIFEST}: field 'post_processing.whitening.{key}' is {step.get(key)!r} "
                              f"but {path.name} holds {params.get(key)!r}")


def check_task(info: FolderInfo, predictor: type) -> None:
    """The task's own checks: ``task.json`` settings typed as the predictor's ``settings_schema``, and the head's
    output rows (``predictor.head_rows(settings, labels)``) matching the labels."""
    directory, path = info.directory, info.directory / TASK_FILE
    schema: dict[str, str] = getattr(predictor, "settings_schema", {})
    if schema:
        if info.settings is None:
            if not getattr(predictor, "settings_optional", False):
                raise FolderError(f"{path}: missing (the settings of the {info.predictor} task)")
        else:
            for key, spec in schema.items():
                if key not in info.settings:
                    if not getattr(predictor, "settings_optional", False) and \
                            key not in getattr(predictor, "settings_defaults", {}):
                        raise FolderError(f"{path}: field 'settings.{key}' is missing")
                    continue
                check_type(info.settings[key], spec, path, f"settings.{key}")
                choices = getattr(predictor, "settings_choices", {}).get(key)
                if choices and info.settings[key] not in choices:
                    raise FolderError(f"{path}: field 'settings.{key}' must be one of {', '.join(choices)}, got "
                                      f"{info.settings[key]!r}")
    labels_file = MANIFEST if info.manifest is not None else TASK_FILE
    if getattr(predictor, "needs_labels", False) and not info.labels:
        raise FolderError(f"{directory / labels_file}: field 'labels' is missing (a {info.predictor} model needs "
                          "its labels)")
    rows = predictor.head_rows(info.settings or {}, info.labels) if info.labels else {}
    if rows:
        if not (directory / HEAD_FILE).is_file():
            raise FolderError(f"{directory / HEAD_FILE}: missing (the task head)")
        header = safetensors_header(directory / HEAD_FILE)
        for name, want in rows.items():
            shape = header.get(name, {}).get("shape")
            if not shape:
                raise FolderError(f"{directory / HEAD_FILE}: no tensor {name!r} (the head of a {info.predictor} model)")
            if shape[0] != want:
                raise FolderError(f"{directory / HEAD_FILE}: {name} has {shape[0]} output rows, but {labels_file}'s "
                                  f"field 'labels' ({len(info.labels)} labels) needs {want}")


def read_task(directory: str | Path, required: bool = True) -> dict[str, Any]:
    """``{"task", "labels", "settings"}`` of a model folder: task and labels from ``manifest.json`` (from
    ``task.json`` in a folder of an older kexue), the settings from ``task.json`` (``{}`` if absent and not
    ``required``)."""
    directory = Path(directory)
    path = directory / TASK_FILE
    if not path.exists():
        if required:
            raise CheckpointError(f"{directory} has no {TASK_FILE} (the settings of its task head); "
                                  "was it written by a kexue recipe?")
        return {}
    info = _task_json(directory)
    manifest = read_json(directory / MANIFEST) if (directory / MANIFEST).exists() else None
    if isinstance(manifest, dict):
        info = {**info, "task": manifest.get("task"), "labels": manifest.get("labels")}
    return info


def kexue_block(directory: str | Path) -> dict[str, Any]:
    return dict(_config(Path(directory)).get("kexue") or {})


def load_backbone(directory: str | Path, application: str | None = None) -> tuple[Transformer, Tokenizer]:
    """The Transformer and tokenizer of a model folder, every weight loaded (strict: never random)."""
    directory = Path(directory)
    if not any((directory / name).is_file() for name in ("vocab.txt", "tokenizer.json", "spiece.model")):
        raise CheckpointError(f"{directory} has no tokenizer: kexue reads vocab.txt (WordPiece), tokenizer.json "
                              "or spiece.model (SentencePiece)")
    model = build_model(checkpoint=directory, application=application)  # the kexue block's settings
    return model.eval(), family_of(model).tokenizer(directory)  # the family's: vocab.txt, tokenizer.json, ...


def load_head(directory: str | Path, module: nn.Module, backbone: str) -> nn.Module:
    """Load ``head.safetensors`` into the task ``module`` (its Transformer, attribute ``backbone``, is
    already loaded); every head tensor must be there with its shape."""
    from safetensors.torch import load_file

    path = Path(directory) / HEAD_FILE
    if not path.exists():
        raise CheckpointError(f"{directory} has no {HEAD_FILE} (the task head)")
    state = load_file(str(path))
    check_fit(LoadReport.compare(head_state(module, backbone), state), str(path), "the task head")
    module.load_state_dict(state, strict=False)
    return module


__all__ = ["FolderInfo", "HEAD_FILE", "TASK_FILE", "WHITENING_FILE", "check_model_folder", "check_task",
           "embedding_rows", "head_state", "kexue_block", "load_backbone", "load_head", "model_card", "plot_loss",
           "read_task", "save_encoder", "save_model_folder", "save_task_model", "whitening_step"]
