"""Floor 6, recipes: each technique turned into a program, declared once in :data:`REGISTRY`.

A :class:`Recipe` names the program's module (imported only when it runs, so ``kexue --help`` stays fast),
its entry function and, for recipes whose saved folder is served, the :class:`~kexue.recipes.predictor.Predictor`
class that :func:`kexue.load` returns for that folder's task. ``kexue <name>``, ``python -m kexue <name>``,
``kexue.load``, ``kexue predict`` and ``kexue serve`` all read this one table.

Task recipes (``ner``, ``classify``, ``reading``, ``poem``, ``dialogue``) read the user's data
(:mod:`kexue.data.files`), train through :func:`kexue.train.fit` and save a model folder
(:mod:`kexue.recipes.folder`) whose predictor reproduces the recipe's own evaluation. A task of the user's
own is a :class:`~kexue.recipes.custom.Task` (``kexue.recipes.Task``, :func:`register_task`): its folders
are served the same way (:mod:`kexue.recipes.custom`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Recipe:
    """One program. ``module`` is a dotted path under ``kexue``; ``function`` its ``main(argv) -> int``
    (``None``: no command, a predictor only); ``predictor`` the class in ``module`` serving saved folders
    whose task is ``task`` (default: ``name``)."""

    name: str
    summary: str
    module: str
    function: str | None = "main"
    predictor: str | None = None
    task: str | None = None

    @property
    def command(self) -> bool:
        return self.function is not None

    @property
    def served_task(self) -> str | None:
        return (self.task or self.name) if self.predictor else None

    def main(self) -> Callable[[list[str]], int]:
        if self.function is None:
            raise ValueError(f"{self.name} is not a command")
        return getattr(importlib.import_module(self.module), self.function)

    def predictor_class(self) -> Any:
        if self.predictor is None:
            raise ValueError(f"the {self.name} recipe saves no servable folder")
        return getattr(importlib.import_module(self.module), self.predictor)


_R = Recipe
REGISTRY: tuple[Recipe, ...] = (
    # --- the flagship demo and evaluation
    _R("demo", "the flagship demo: sentence embeddings on real data (English and Chinese)", "kexue.recipes.demo"),
    _R("evaluate", "Spearman of a sentence encoder on every STS set, or on your pair files", "kexue.recipes.evaluate"),
    # --- task recipes: train on your data, save a folder that kexue.load / predict / serve use
    _R("ner", "NER on People's Daily: GlobalPointer (+R-Drop) or CRF, entity P/R/F1", "kexue.recipes.ner",
       predictor="NERPredictor"),
    _R("classify", "short-text / sentence-pair classification: Tang vs Song or a user TSV", "kexue.recipes.classify",
       predictor="ClassifyPredictor"),
    _R("reading", "UniLM reading comprehension with multi-passage voting (WebQA), EM/F1", "kexue.recipes.reading",
       predictor="ReadingPredictor"),
    _R("poem", "class-conditional poem generation with Conditional LayerNorm (fortunes-zh)", "kexue.recipes.poem",
       predictor="PoemPredictor"),
    _R("dialogue", "multi-turn dialogue with a causal LM, response perplexity", "kexue.recipes.dialogue",
       predictor="DialoguePredictor"),
    _R("similarity", "sentence encoder: CoSENT / SBERT / cosine on labelled pairs, InfoNCE / SimCSE contrastive",
       "kexue.recipes.similarity"),
    _R("mine", "hard negatives for --loss infonce: the corpus sentences an encoder finds closest to each anchor",
       "kexue.recipes.mine"),
    _R("whiten", "fit BERT-whitening (β, γ, k) on a corpus and store it in an encoder folder",
       "kexue.recipes.whiten"),
    # --- folders without a task: encoders and text generators (any HF-layout folder too)
    _R("encoder", "sentence encoder: embed, search, pair similarity", "kexue.recipes.encoder", None,
       predictor="EncoderPredictor"),
    _R("generate", "text generator (application lm / unilm / seq2seq)", "kexue.recipes.encoder", None,
       predictor="GenerationPredictor"),
    # --- folders of a task of the user's own (kexue.recipes.Task; kind "custom" in the manifest)
    _R("custom", "a task of your own: declared as a Task, trained with fit, served", "kexue.recipes.custom", None,
       predictor="CustomPredictor"),
    # --- pretraining and generative models
    _R("pretrain", "MLM (whole-word masking) / UniLM pretraining on a folder of text", "kexue.recipes.pretrain"),
    _R("zh-mini", "rebuild kexue-zh-mini, the shipped Chinese RoFormer, from scratch", "kexue.recipes.zh_mini"),
    _R("diffusion", "train a diffusion/flow model on digits or images, save samples", "kexue.recipes.diffusion"),
    _R("multimodal", "one Transformer: text -> image by a flow on patches, image -> caption (digits or a class folder)",
       "kexue.recipes.multimodal", predictor="MultimodalPredictor"),
    _R("gan", "train a GAN (DCGAN/SELF-MOD; hinge/WGAN-GP/reflow) on digits or images", "kexue.recipes.gan"),
    # --- checkpoints
    _R("convert", "bert4keras TF checkpoint -> HF-layout folder (kexue convert bert4keras ...)",
       "kexue.recipes.convert"),
    _R("export", "export a saved model to ONNX, fp32 + int8 (kexue export onnx DIR), checked against PyTorch",
       "kexue.recipes.export"),
    # --- using a saved folder (the command line's own programs, floor 7)
    _R("predict", "predict with a saved model folder: JSON lines out", "kexue.cli.use", "predict_main"),
    _R("chat", "chat with a saved dialogue model (stdin lines)", "kexue.cli.use", "chat_main"),
    _R("embed", "sentence vectors of a saved encoder: JSON lines out", "kexue.cli.use", "embed_main"),
    _R("search", "nearest sentences: over a saved index, or a corpus file with an encoder", "kexue.cli.use",
       "search_main"),
    _R("index", "build / extend a persistent search index (the corpus embedded once)", "kexue.cli.index"),
    _R("serve", "serve a saved model over HTTP (FastAPI): /predict, /search, the OpenAI /v1 API", "kexue.cli.serve"),
)
del _R

COMMANDS: dict[str, Recipe] = {r.name: r for r in REGISTRY if r.command}
TASKS: dict[str, Recipe] = {r.served_task: r for r in REGISTRY if r.predictor}


def recipe(name: str) -> Recipe:
    """The recipe of command ``name`` (``ValueError`` listing the known ones)."""
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}")
    return COMMANDS[name]


#: names this package hands out from :mod:`kexue.recipes.custom`, imported when first used (like the recipes)
_CUSTOM = ("CustomPredictor", "Task", "TaskError", "TaskModel", "register_task")


def __getattr__(name: str) -> Any:
    if name in _CUSTOM:
        return getattr(importlib.import_module("kexue.recipes.custom"), name)
    raise AttributeError(f"module 'kexue.recipes' has no attribute {name!r}")


__all__ = ["COMMANDS", "REGISTRY", "Recipe", "TASKS", "recipe", *_CUSTOM]
