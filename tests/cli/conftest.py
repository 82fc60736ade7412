"""Model folders the serve tests share (trained once per session by the recipes, seconds each)."""
import json
import shutil

import pytest
import torch

from serve_common import train_dialogue, train_encoder


@pytest.fixture(scope="session")
def dialogue_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return train_dialogue(tmp_path_factory.mktemp("served") / "dialogue")


@pytest.fixture(scope="session")
def generator_dir(dialogue_dir, tmp_path_factory):
    """The dialogue folder without its task: a plain LM generator (``kexue.load`` gives a GenerationPredictor)."""
    folder = tmp_path_factory.mktemp("served") / "lm"
    shutil.copytree(dialogue_dir, folder)
    for name in ("manifest.json", "task.json"):  # the task lives in the manifest (and task.json) only
        (folder / name).unlink(missing_ok=True)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key in ("task", "labels"):  # folders of older kexue versions also kept it in config.json
        config["kexue"].pop(key, None)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("served")
    return train_encoder(root / "encoder", root)
