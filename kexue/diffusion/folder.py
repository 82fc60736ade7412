"""A trained diffusion model as one folder: ``model.safetensors`` + ``config.json`` (+ e.g. ``samples.png``),
written as a unit with its ``manifest.json`` (kind ``diffusion``, :func:`kexue.io.write_folder`: complete or
not there, never half) and checked when read back (the manifest's sizes and hashes, typed config fields, the
weights file whole, every weight of the model :func:`kexue.diffusion.methods.build` makes)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from kexue.diffusion.methods import build
from kexue.models.weights import LoadReport, check_fit
from kexue.io import FolderError, check_folder, check_type, folder_info, read_json, safetensors_header, \
    save_safetensors, write_folder, write_json

MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
CONFIG_KEYS = {"kind", "channels", "width", "size", "method", "train_steps", "data"}


def save_model(model: nn.Module, directory: str | Path, *, files: dict[str, Callable[[Path], object]] | None = None,
               **config) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``kind``, ``channels``, ``width`` and the other
    :data:`CONFIG_KEYS`), and ``files`` (name -> a function writing that path, e.g. the samples' PNG), as one
    model folder (:func:`kexue.io.write_folder`: complete or not there, never half); what else ``directory``
    holds (the run folders ``train/``) stays. :func:`load_model` reads it back."""
    unknown = set(config) - CONFIG_KEYS
    missing = {"kind", "channels", "width"} - set(config)
    if unknown or missing:
        raise ValueError(f"diffusion model config: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file; --save takes a folder")
    with write_folder(directory, folder_info("diffusion"), overwrite=True) as stage:
        save_safetensors(model.state_dict(), stage / MODEL_FILE)
        write_json(stage / CONFIG_FILE, config)
        for name, write in (files or {}).items():
            write(stage / name)
    return directory


CONFIG_TYPES = {"kind": "string", "channels": "integer", "width": "integer", "size": "integer", "method": "string",
                "train_steps": "integer", "data": "string"}



def load_model(directory: str | Path) -> tuple[nn.Module, dict]:
    """The model :func:`save_model` wrote (eval mode) and its config; the folder is checked first (its
    manifest's sizes and hashes, typed config fields, the weights file whole) and every weight must match."""
    directory = Path(directory)
    manifest = check_folder(directory)
    if manifest is not None and manifest["kind"] != "diffusion":
        raise FolderError(f"{directory / 'manifest.json'}: field 'kind' is {manifest['kind']!r}: not a diffusion "
                          "model folder (kexue.load reads the others)")
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found: not a folder written by kexue diffusion --save")
    config = check_type(read_json(directory / CONFIG_FILE), "object", directory / CONFIG_FILE, "(top level)")
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"{directory / CONFIG_FILE}: unknown keys {sorted(unknown)}")
    for key, spec in CONFIG_TYPES.items():
        if key in config or key in ("kind", "channels", "width"):
            check_type(config.get(key), spec, directory / CONFIG_FILE, key)
    safetensors_header(directory / MODEL_FILE)
    from safetensors.torch import load_file

    model = build(config["kind"], config["channels"], config["width"])
    state = load_file(str(directory / MODEL_FILE))
    check_fit(LoadReport.compare(model.state_dict(), state), str(directory / MODEL_FILE),
              f"a {config['kind']} model of width {config['width']}")  # the one strict-load rule
    model.load_state_dict(state)
    return model.eval().requires_grad_(False), config
