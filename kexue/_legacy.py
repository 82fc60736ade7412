"""Import paths of earlier kexue releases, kept working: ``import kexue.tokenizers`` gives the module that
now lives at :mod:`kexue.text.tokenizer` (the same module object, so monkeypatching either name patches
both). Installed by ``import kexue``; resolves lazily, only when an old name is imported."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED: dict[str, str] = {
    "kexue.argtypes": "kexue.recipes.args",
    "kexue.bert4keras": "kexue.models.bert4keras",
    "kexue.capture": "kexue.tools.capture",
    "kexue.checkpoints": "kexue.models.checkpoints",
    "kexue.datasets": "kexue.data.shipped",
    "kexue.demo": "kexue.recipes.demo",
    "kexue.demo_zh": "kexue.recipes.demo_zh",
    "kexue.diffusion.cli": "kexue.recipes.diffusion",
    "kexue.diffusion.data": "kexue.data.images",
    "kexue.diffusion.metrics": "kexue.tools.image_metrics",
    "kexue.generative.gan_cli": "kexue.recipes.gan",
    "kexue.hubness": "kexue.similarity.hubness",
    "kexue.losses.seq2seq": "kexue.losses.language_model",
    "kexue.lst": "kexue.heads.ladder_side_tuning",
    "kexue.predict": "kexue.recipes.predictor",
    "kexue.pretrained": "kexue.models.pretrained",
    "kexue.quantize": "kexue.tools.quantize",
    "kexue.serve": "kexue.cli.serve",
    "kexue.similarity.inputs": "kexue.data.inputs",
    "kexue.similarity.pairs": "kexue.data.pairs",
    "kexue.t5_pegasus": "kexue.models.t5_pegasus",
    "kexue.tasks": "kexue.recipes",
    "kexue.tasks.classify": "kexue.recipes.classify",
    "kexue.tasks.common": "kexue.recipes.common",
    "kexue.tasks.data": "kexue.data.files",
    "kexue.tasks.dialogue": "kexue.recipes.dialogue",
    "kexue.tasks.encoder": "kexue.recipes.encoder",
    "kexue.tasks.export": "kexue.recipes.folder",
    "kexue.tasks.metrics": "kexue.recipes.metrics",
    "kexue.tasks.ner": "kexue.recipes.ner",
    "kexue.tasks.poem": "kexue.recipes.poem",
    "kexue.tasks.reading": "kexue.recipes.reading",
    "kexue.tasks.sampling": "kexue.recipes.sampling",
    "kexue.tokenizers": "kexue.text.tokenizer",
    "kexue.trainstate": "kexue.train.state",
    "kexue.zh_mini": "kexue.pretraining.zh_mini",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # already executed under its new name
        pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in MOVED:
            return importlib.util.spec_from_loader(name, _Alias(MOVED[name]))
        return None


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
