"""Using a trained model: ``kexue.load(DIR)`` and the ``kexue predict / chat / embed / search`` commands.

``load`` reads the folder a recipe wrote (``config.json`` with the ``"kexue"`` block naming the task) and
returns the :class:`Predictor` of that task; ``predictor.predict(inputs) -> list[dict]`` runs the same
code path as the recipe's own evaluation, so it reproduces the recipe's predictions exactly.
The folder is checked first (:mod:`kexue.recipes.folder`). A folder without a task is an encoder (``embed``/``search``/pair similarity) or, with application
``lm``/``unilm``, a text generator.
"""
from __future__ import annotations

from argparse import ArgumentTypeError
from pathlib import Path
from typing import Any, Callable, Mapping

from kexue.generation import GenerationOptions
from kexue.hub import resolve


class Predictor:
    """A trained model for one task. Subclasses set ``task``, ``options`` (the keyword options ``predict``
    accepts: names of :meth:`GenerationOptions.user_options`, those that apply to the task) and implement
    ``check`` and ``_predict``."""

    task: str = ""
    options: tuple[str, ...] = ()
    # options of this task alone (not generation options): name -> a function reading and checking its text
    task_options: dict[str, Callable[[str], Any]] = {}
    progress: bool = False
    model_attr: str = ""  # the attribute holding the nn.Module
    path = None  # the inference path kexue.load picked (kexue.recipes.fastpath.InferencePath)
    #: ``task.json`` settings the predictor reads: name -> JSON type (:func:`kexue.io.check_type`)
    settings_schema: dict[str, str] = {}
    settings_optional: bool = False  # True: task.json and each setting may be absent (defaults apply)
    settings_defaults: dict[str, Any] = {}  # settings a folder may lack (one written before they existed)
    settings_choices: dict[str, tuple] = {}  # settings with a closed set of values
    needs_labels: bool = False  # the folder must record its labels (one per output row of the head)
    poolings: tuple[str, ...] = ()  # the manifest's ``pooling`` values this predictor implements

    @classmethod
    def head_rows(cls, settings: dict, labels: list[str] | None) -> dict[str, int]:
        """``{tensor of head.safetensors: its output rows}`` implied by ``labels`` (checked before loading)."""
        return {}

    @classmethod
    def for_folder(cls, info) -> type["Predictor"]:
        """The class serving the checked folder ``info`` (:class:`kexue.recipes.folder.FolderInfo`): ``cls``
        itself, except for predictors of many tasks (a custom folder's class is that of its own task)."""
        return cls

    @property
    def model(self):
        """The ``nn.Module`` that ``quantize`` rewrites."""
        return getattr(self, self.model_attr)

    @model.setter
    def model(self, module) -> None:
        setattr(self, self.model_attr, module)

    def check(self, item: Any) -> Any:
        """Validate one input (``ValueError`` naming what is wrong); returns it normalised."""
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = [n for n in cls.options if n not in GenerationOptions.user_options()]
        if unknown:
            raise TypeError(f"{cls.__name__}.options: {unknown[0]!r} is not a user option of GenerationOptions "
                            f"({', '.join(GenerationOptions.user_options())})")

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The caller's options, checked: a name this task does not take is refused by name, a value is
        read (a number, or its text as on the command line) and checked by its :class:`GenerationOptions`
        field (a ``ValueError`` naming the option)."""
        out = {}
        for name, value in options.items():
            if name not in self.options and name not in self.task_options:
                known = ", ".join(sorted((*self.options, *self.task_options))) or "none"
                raise ValueError(f"option {name!r} does not apply to {self.task} models (options: {known})")
            if isinstance(value, (bool, dict, list)) or value is None:
                raise ValueError(f"option {name}: expected a number, got {value!r}")
            if name in self.options:
                out[name] = GenerationOptions.parse(name, str(value))
                continue
            try:
                out[name] = self.task_options[name](str(value))
            except (TypeError, ValueError, ArithmeticError, ArgumentTypeError) as e:  # argparse-style type functions
                raise ValueError(f"option {name}: {e}") from None
        return out

    def predict(self, inputs: list, **options) -> list[dict]:
        """One output dict per input; ``options`` (e.g. ``top_k=8``) are checked like the CLI flags
        (:meth:`check_options`)."""
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(f"predict expects a list of inputs, got {type(inputs).__name__}")
        options = self.check_options(options)
        items = [self.check(x) for x in inputs]
        return self._predict(items, **options) if items else []

    def _predict(self, items: list, **options) -> list[dict]:
        raise NotImplementedError

    def decodings(self, items: list, **options) -> list | None:
        """For tasks that generate token by token (greedy decoding or sampling): one
        :class:`~kexue.recipes.sampling.Decoding` per checked input, built from the checked ``options`` as
        ``_predict`` builds them, so a server can decode many requests in shared steps and stream tokens.
        ``None``: this task (or these options, e.g. beam search) runs through ``predict`` only."""
        return None


def load(directory: str | Path, quantize: str | None = None, *, backend: str = "auto",
         precision: str = "fp32") -> Predictor:
    """The predictor of the model folder ``directory``. ``backend`` (``auto | torch | onnxruntime``) and
    ``precision`` (``fp32 | bf16 | int8 | auto``) pick the inference path (:mod:`kexue.recipes.fastpath`:
    fp32 unless asked otherwise, the fastest path that equals it; ``predictor.path`` says which and why).
    ``quantize`` (earlier option): a :func:`kexue.tools.quantize.quantize` mode applied to the torch model.

    The folder is checked before anything is built (:func:`kexue.recipes.folder.check_model_folder`: its
    manifest and hashes, the vocabulary against the embedding, the labels against the head, typed JSON);
    a diffusion or GAN folder is refused with the command that uses it."""
    from kexue.io import FolderError
    from kexue.models.family import bert4keras_folder_hint
    from kexue.recipes.folder import USED_BY, check_model_folder

    directory = resolve(directory)  # a hub id (org/name[@revision]) -> its cached snapshot
    hint = bert4keras_folder_hint(directory)  # a bert4keras TF checkpoint: the command that converts it
    if hint:
        raise FolderError(hint)
    info = check_model_folder(Path(directory))  # the task's own checks included
    if info.kind in USED_BY:
        raise FolderError(f"{info.directory} is a {info.kind} model folder, written by {USED_BY[info.kind]}; "
                          "kexue.load / predict serve text models")
    predictor = info.predictor_class.from_folder(info.directory)
    from kexue.recipes.fastpath import configure

    return configure(predictor, info.directory, backend, precision, quantize or None)


__all__ = ["Predictor", "load"]
