"""Checkpoint folders in the Hugging Face layout: ``config.json`` + ``model.safetensors`` or
``pytorch_model.bin`` (read with ``weights_only=True``), or their sharded ``*.index.json`` form.

The public face of checkpoint files. Reading and writing tensors is :mod:`kexue.models.files` (below the
families); names and shapes are the family's weight map's business (:mod:`kexue.models.weights`);
``config.json`` is the family record's (:func:`kexue.models.family.hf_config`). This module sits on top of
all three and adds :func:`save_pretrained`. Loading is strict by default: weights the model needs but the
file lacks (*missing*), weights the file has but nothing uses (*unexpected*) and shape mismatches are all
reported by name in one :class:`CheckpointError`. Heads a checkpoint may carry for other tasks (pooler,
MLM, NSP) are skipped quietly when the model was built without them.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from kexue.io import write_json
from kexue.models.family import hf_config
from kexue.models.files import (INDEX, SINGLE, load_checkpoint, load_checkpoint_except, parse_size, read_state_dict,
                                remove_stale_weights, weight_files, write_weights)
from kexue.models.weights import CheckpointError, LoadReport

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "load_checkpoint_except", "parse_size",
           "read_state_dict", "save_pretrained", "weight_files", "INDEX", "SINGLE"]


def save_pretrained(model: nn.Module, directory: str | Path, tokenizer=None, safe_serialization: bool = True,
                    max_shard_size: int | str | None = None) -> Path:
    """Write ``config.json`` (HF fields + the ``"kexue"`` block) and the weights in the HF layout, so
    ``transformers`` and ``build_model(checkpoint=directory)`` load them back.

    ``safe_serialization=False`` writes ``pytorch_model.bin``; ``max_shard_size`` (bytes or "5MB")
    splits the weights into shards listed by ``*.index.json``. Every file is written atomically;
    weight files of another layout left by an earlier save are removed afterwards.
    """
    transformed = next((type(m).__name__ for m in model.modules() if type(m).__module__ == "kexue.tools.quantize"
                        or type(m).__module__.startswith("torch.ao.nn")), None)
    if transformed is not None:  # its weights have no HF layout (int8 buffers, transposed matrices)
        raise ValueError(f"save_pretrained: the model holds {transformed} layers from kexue.tools.quantize, an "
                         "inference-only transform; save the fp32 model it was made from")
    directory = Path(directory)
    written = write_weights(model.weight_map().to_hf(), directory, safe_serialization, max_shard_size)
    write_json(directory / "config.json", hf_config(model))
    remove_stale_weights(directory, written)
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory
