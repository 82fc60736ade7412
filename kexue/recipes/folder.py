"""The model folder every recipe leaves in ``--out``, and reading it back.

Layout (every file written atomically):

* ``config.json`` + ``model.safetensors`` — the Transformer in the HF layout (``transformers`` loads it),
  with the ``"kexue"`` block: ``family``, ``application``, ``with_mlm``, ``cond_dim``, ``task``, ``labels``;
* ``vocab.txt`` + ``tokenizer_config.json``;
* ``head.safetensors`` — the task head (classifier, GlobalPointer, CRF, class embeddings), if any;
* ``task.json`` — the settings the predictor needs to repeat the recipe's evaluation exactly
  (head type, maxlen, decoding options);
* ``metrics.json``, ``loss.png`` (training loss per step) and ``README.md`` (a short model card).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kexue.models.checkpoints import CheckpointError, save_pretrained
from kexue.models.weights import LoadReport, check_fit
from kexue.io import atomic_write, save_safetensors, write_json, write_text
from kexue.models import Transformer, build_model
from kexue.text.tokenizer import Tokenizer

TASK_FILE, HEAD_FILE = "task.json", "head.safetensors"


def head_state(module: nn.Module, backbone: str) -> dict[str, torch.Tensor]:
    """The task module's tensors outside its Transformer (attribute ``backbone``)."""
    return {k: v.detach().contiguous() for k, v in module.state_dict().items() if not k.startswith(backbone + ".")}


def save_task_model(out: Path, task: str, backbone: Transformer, tokenizer: Tokenizer, head: dict[str, torch.Tensor],
                    labels: list[str] | None, settings: dict[str, Any], metrics: dict[str, Any],
                    step_losses: list[float], card: dict[str, Any]) -> Path:
    """Write the self-contained folder of a trained task model (see the module docstring)."""
    out = Path(out)
    save_pretrained(backbone, out, tokenizer)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config["kexue"] = {**(config.get("kexue") or {}), "task": task, "labels": labels}
    write_json(out / "config.json", config)
    if head:
        save_safetensors(head, out / HEAD_FILE)
    write_json(out / TASK_FILE, {"task": task, "labels": labels, "settings": settings})
    write_json(out / "metrics.json", metrics)
    plot_loss(step_losses, out / "loss.png", f"kexue {task}")
    write_text(out / "README.md", model_card(task, labels, settings, metrics, card))
    return out


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
    lines += ["", "![training loss](loss.png)", "", "## Use", "", "```",
              f"kexue predict {card.get('out', 'DIR')} \"...\"",
              f"python -c \"import kexue; print(kexue.load('{card.get('out', 'DIR')}').predict([...]))\"", "```", ""]
    return "\n".join(lines)


def read_task(directory: str | Path, required: bool = True) -> dict[str, Any]:
    """The ``task.json`` of a model folder (``{}`` if absent and not ``required``)."""
    path = Path(directory) / TASK_FILE
    if not path.exists():
        if required:
            raise CheckpointError(f"{directory} has no {TASK_FILE} (the settings of its task head); "
                                  "was it written by a kexue recipe?")
        return {}
    info = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(info, dict) or not isinstance(info.get("settings"), dict):
        raise CheckpointError(f"{path} lacks its 'settings' object")
    return info


def kexue_block(directory: str | Path) -> dict[str, Any]:
    config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    return dict(config.get("kexue") or {})


def load_backbone(directory: str | Path, application: str | None = None) -> tuple[Transformer, Tokenizer]:
    """The Transformer and tokenizer of a model folder, every weight loaded (strict: never random)."""
    if not (Path(directory) / "vocab.txt").is_file():
        raise CheckpointError(f"{directory} has no vocab.txt: kexue predicts with WordPiece vocabularies "
                              "(a GPT-2 / SentencePiece tokenizer is not supported)")
    model = build_model(checkpoint=Path(directory), application=application)  # the kexue block's settings
    return model.eval(), Tokenizer.from_pretrained(directory)


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


__all__ = ["HEAD_FILE", "TASK_FILE", "head_state", "kexue_block", "load_backbone", "load_head", "model_card", "plot_loss",
           "read_task", "save_task_model"]
