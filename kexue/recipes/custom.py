"""Tasks of your own: a model you wrote, trained with :func:`kexue.train.fit`, saved as a model folder that
``kexue.load``, ``kexue predict`` and ``kexue serve`` use exactly like a recipe's (see ``docs/custom-tasks.md``).

A :class:`Task` declares what serving a saved model needs, once::

    TASK = Task("sts-score",
                head=lambda hidden, settings, labels: nn.Linear(hidden, 1),   # built from the backbone's width
                forward=forward,          # (model, batch) -> tensor: TaskModel.__call__
                loss=loss,                # (model, batch) -> scalar: the loss_fn of kexue.train.fit
                predict=predict,          # (model, checked inputs) -> one JSON dict per input
                inputs=check_pair,        # a JSON type ("string", "list of strings", ...) or a checking function
                outputs={"score": "number"},          # each output's fields and their JSON types
                settings={"maxlen": "integer"})       # task.json's settings and their JSON types

    model = TASK.build(backbone, tokenizer, settings={"maxlen": 64})   # a TaskModel: backbone + head
    kexue.fit(model, TASK.loss, batches, optimizer=...)
    model.save("runs/sts")

The folder is the one format of :mod:`kexue.recipes.folder`: ``manifest.json`` with ``kind: custom``, the task's
name, its labels and ``task_module`` (``"package.module:ATTRIBUTE"``, where the task is declared), the
backbone (``config.json`` + ``model.safetensors`` + ``vocab.txt``), the head (``head.safetensors``: the
tensors of ``model.head``) and ``task.json`` (the settings).

**Finding the task of a folder.** With a ``task_module``, :func:`kexue.load` imports that module by name,
in any process where it is importable (installed, or on ``PYTHONPATH``), and takes the attribute, which must
be a :class:`Task` of the folder's task name. Without one (a task declared in a script's ``__main__``), the
task must be registered in the loading process first (:func:`register_task`). A module that cannot be
imported is refused in one line naming it. **Code in the folder is never run**: the import goes through
``sys.path`` with every entry inside the model folder left out, and a module found inside it is refused.

Inputs are checked one by one before any batch runs (a bad one is a ``ValueError``: a 400 in ``kexue serve``);
outputs are checked against ``outputs`` and for JSON (a task returning something else is a bug of the task:
:class:`TaskError`).
"""
from __future__ import annotations

import importlib
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from kexue.io import MANIFEST, TASK_MODULE, FolderError, check_type, folder_info
from kexue.recipes import TASKS
from kexue.recipes.folder import (TASK_FILE, FileContent, head_state, load_backbone, load_head, model_card, plot_loss,
                                  read_task, save_model_folder)
from kexue.recipes.predictor import Predictor

#: the JSON types ``inputs``, ``outputs`` and ``settings`` name (:func:`kexue.io.check_type`), each optionally
#: followed by ``" or null"``
TYPES = ("string", "integer", "boolean", "number", "object", "list", "list of strings")
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
AUTO = "auto"


class TaskError(RuntimeError):
    """A task's own functions broke its declaration (outputs of the wrong number, fields or JSON types)."""


def _check_spec(spec: Any, what: str) -> str:
    base, _, null = spec.partition(" or ") if isinstance(spec, str) else ("", "", "")
    if base not in TYPES or null not in ("", "null"):
        raise ValueError(f"{what}: {spec!r} is not a JSON type ({', '.join(TYPES)}, each optionally '... or null')")
    return spec


def _matches(value: Any, spec: str) -> bool:
    try:
        check_type(value, spec, "", "")
    except FolderError:
        return False
    return True


def _a(spec: str) -> str:
    return ("an " if spec[0] in "aeiou" else "a ") + spec


def _shown(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)[:80]
    except (TypeError, ValueError):
        return type(value).__name__


@dataclass(frozen=True, eq=False)
class Task:
    """A task of your own. ``head(hidden_size, settings, labels) -> nn.Module`` builds the head on a backbone
    of that width; ``forward(model, batch)`` is what calling the :class:`TaskModel` runs (optional);
    ``loss(model, batch) -> scalar`` is the ``loss_fn`` of :func:`kexue.train.fit` (optional: a task only
    served needs none); ``predict(model, inputs) -> [dict]`` one JSON object per (checked) input, run under
    ``torch.no_grad`` in eval mode. ``inputs``: a JSON type every input must have, or a function returning
    the input normalised and raising ``ValueError`` for a bad one. ``outputs``: ``{field: JSON type}`` of
    every output (empty: any JSON object). ``settings``: ``{name: JSON type}`` of the settings the model is
    built with (saved in ``task.json``). ``needs_labels``: the model must be built with labels (one per
    output row, recorded in the manifest). ``module``: ``"package.module:ATTRIBUTE"`` holding this task
    (default: found when saving, see :meth:`TaskModel.save`)."""

    name: str
    head: Callable[[int, dict, "list[str] | None"], nn.Module]
    predict: Callable[["TaskModel", list], list]
    forward: Callable[..., Any] | None = None
    loss: Callable[["TaskModel", Any], Any] | None = None
    inputs: str | Callable[[Any], Any] = "string"
    outputs: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)
    needs_labels: bool = False
    module: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise ValueError(f"Task name {self.name!r}: lower-case letters, digits, '_', '.' and '-' only")
        if self.name in TASKS:
            raise ValueError(f"Task name {self.name!r} is one of kexue's own tasks ({', '.join(sorted(TASKS))}); "
                             "choose another")
        where = f"Task {self.name!r}"
        for attr in ("head", "predict"):
            if not callable(getattr(self, attr)):
                raise TypeError(f"{where}: {attr} must be a function, got {type(getattr(self, attr)).__name__}")
        for attr in ("forward", "loss"):
            if getattr(self, attr) is not None and not callable(getattr(self, attr)):
                raise TypeError(f"{where}: {attr} must be a function or None")
        if not callable(self.inputs):
            _check_spec(self.inputs, f"{where}: inputs")
        for attr in ("outputs", "settings"):
            schema = getattr(self, attr)
            if not isinstance(schema, Mapping) or not all(isinstance(k, str) for k in schema):
                raise TypeError(f"{where}: {attr} must map field names to JSON types")
            for key, spec in schema.items():
                _check_spec(spec, f"{where}: {attr}[{key!r}]")
            object.__setattr__(self, attr, dict(schema))
        if self.module is not None and not (isinstance(self.module, str) and TASK_MODULE.fullmatch(self.module)):
            raise ValueError(f"{where}: module must be 'package.module:ATTRIBUTE', got {self.module!r}")

    # -- checks ------------------------------------------------------------------------------------
    def check_settings(self, settings: Any, where: str | os.PathLike = "settings") -> dict:
        """``settings`` as the task declares them: every declared name, of its JSON type, and nothing else."""
        if not isinstance(settings, dict):
            raise ValueError(f"{where}: the settings of task {self.name!r} are a dict, got {type(settings).__name__}")
        unknown = sorted(set(settings) - set(self.settings))
        if unknown:
            known = ", ".join(sorted(self.settings)) or "none"
            raise ValueError(f"{where}: task {self.name!r} has no setting {unknown[0]!r} (its settings: {known})")
        for key, spec in self.settings.items():
            if key not in settings:
                raise ValueError(f"{where}: setting {key!r} of task {self.name!r} is missing")
            if not _matches(settings[key], spec):
                raise ValueError(f"{where}: setting {key!r} of task {self.name!r} must be {_a(spec)}, got "
                                 f"{_shown(settings[key])}")
        return dict(settings)

    def check_labels(self, labels: Any) -> list[str] | None:
        if labels is None:
            if self.needs_labels:
                raise ValueError(f"task {self.name!r} needs labels (one per output row of its head)")
            return None
        if not (isinstance(labels, (list, tuple)) and labels and all(isinstance(x, str) and x for x in labels)):
            raise ValueError(f"labels of task {self.name!r}: a non-empty list of non-empty strings, got "
                             f"{_shown(labels)}")
        dup = next((x for x in labels if labels.count(x) > 1), None)
        if dup is not None:
            raise ValueError(f"labels of task {self.name!r}: {dup!r} is listed twice")
        return list(labels)

    def check_input(self, item: Any) -> Any:
        """One input, checked (``ValueError`` naming what is wrong) and normalised."""
        if callable(self.inputs):
            return self.inputs(item)
        if not _matches(item, self.inputs):
            raise ValueError(f"a {self.name} input must be {_a(self.inputs)}, got {_shown(item)}")
        return item

    def check_outputs(self, outputs: Any, n: int) -> list[dict]:
        """``predict``'s result: a list of ``n`` JSON objects with the declared fields (:class:`TaskError`)."""
        where = f"task {self.name!r}: predict"
        if not isinstance(outputs, list) or len(outputs) != n:
            got = f"{len(outputs)} outputs" if isinstance(outputs, list) else f"a {type(outputs).__name__}"
            raise TaskError(f"{where} returned {got} for {n} inputs (one dict per input)")
        for i, out in enumerate(outputs):
            if not isinstance(out, dict):
                raise TaskError(f"{where}: output {i} is a {type(out).__name__}, not a dict")
            if self.outputs:
                missing, extra = sorted(set(self.outputs) - set(out)), sorted(set(out) - set(self.outputs))
                if missing or extra:
                    raise TaskError(f"{where}: output {i} " + (f"lacks the field {missing[0]!r}" if missing else
                                    f"has the undeclared field {extra[0]!r}") + f" (outputs: {', '.join(self.outputs)})")
                for key, spec in self.outputs.items():
                    if not _matches(out[key], spec):
                        raise TaskError(f"{where}: output {i} field {key!r} must be {_a(spec)}, got {_shown(out[key])}")
            try:
                json.dumps(out, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise TaskError(f"{where}: output {i} is not JSON ({e})") from None
        return outputs

    # -- building ----------------------------------------------------------------------------------
    def build(self, backbone: nn.Module, tokenizer, settings: dict | None = None,
              labels: list[str] | None = None) -> "TaskModel":
        """The model of this task on ``backbone`` (a kexue Transformer) with a fresh head."""
        settings = self.check_settings({} if settings is None else settings)
        try:
            json.dumps(settings, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"settings of task {self.name!r} must be JSON ({e})") from None
        labels = self.check_labels(labels)
        return TaskModel(self, backbone, self.make_head(backbone, settings, labels), tokenizer, settings, labels)

    def make_head(self, backbone: nn.Module, settings: dict, labels: list[str] | None) -> nn.Module:
        head = self.head(backbone.config.hidden_size, settings, labels)
        if not isinstance(head, nn.Module):
            raise TypeError(f"Task {self.name!r}: head(...) returned a {type(head).__name__}, not an nn.Module")
        return head


class TaskModel(nn.Module):
    """A :class:`Task`'s model: ``backbone`` (the Transformer), ``head``, and the ``tokenizer``, ``settings``
    and ``labels`` it was built with. Calling it runs the task's ``forward``."""

    def __init__(self, task: Task, backbone: nn.Module, head: nn.Module, tokenizer, settings: dict,
                 labels: list[str] | None):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.task, self.tokenizer, self.settings, self.labels = task, tokenizer, dict(settings), labels

    def forward(self, *args, **kwargs):
        if self.task.forward is None:
            raise TypeError(f"task {self.task.name!r} declares no forward; use model.backbone and model.head")
        return self.task.forward(self, *args, **kwargs)

    def predictor(self) -> "CustomPredictor":
        """The predictor of this model as it is now (eval mode), the same as ``kexue.load`` of its folder."""
        return predictor_class(self.task)(self)

    def save(self, out: str | os.PathLike, *, metrics: dict | None = None, losses: list[float] | None = None,
             files: dict[str, FileContent] | None = None, task_module: str | None = AUTO,
             overwrite: bool = False) -> Path:
        """Write the model folder (:func:`kexue.recipes.folder.save_model_folder`, one unit): backbone,
        tokenizer, ``head.safetensors``, ``task.json`` (the settings), ``metrics.json`` and ``loss.png`` (a
        loss per step) if given, a ``README.md`` and ``files``. ``task_module``: where a new process finds the
        task, ``"package.module:ATTRIBUTE"``; by default ``task.module``, else the module-level name holding
        the task in the module that defines its ``predict`` (not ``__main__``: then none is recorded, with a
        warning, and loading needs :func:`register_task`); ``None``: record none."""
        ref = find_module(self.task) if task_module == AUTO else task_module
        if ref is not None and not (isinstance(ref, str) and TASK_MODULE.fullmatch(ref)):
            raise ValueError(f"task_module must be 'package.module:ATTRIBUTE', got {ref!r}")
        extra: dict[str, FileContent] = {}
        if metrics is not None:
            extra["metrics.json"] = metrics
        if losses:
            extra["loss.png"] = lambda path: plot_loss(list(losses), path, f"kexue {self.task.name}")
        card = {"command": f"a custom task, {ref or self.task.name + ' (registered in-process)'}", "out": str(out),
                "data": {}}
        extra["README.md"] = model_card(self.task.name, self.labels, self.settings, metrics or {}, card)
        extra.update(files or {})
        info = folder_info("custom", self.task.name, self.labels, task_module=ref)
        return save_model_folder(out, info, backbone=self.backbone, tokenizer=self.tokenizer,
                                 head=head_state(self, "backbone"), settings=self.settings, files=extra,
                                 overwrite=overwrite)


def find_module(task: Task) -> str | None:
    """``"package.module:ATTRIBUTE"`` of ``task``: its ``module``, or the module-level name bound to it in an
    already imported module defining its ``predict`` or ``head`` (nothing is imported here)."""
    if task.module is not None:
        return task.module
    for fn in (task.predict, task.head, task.forward, task.loss):
        name = getattr(fn, "__module__", None)
        module = sys.modules.get(name) if name and name != "__main__" else None
        for attr, value in (vars(module).items() if module is not None else ()):
            if value is task and re.fullmatch(r"[A-Za-z_]\w*", attr):
                return f"{name}:{attr}"
    warnings.warn(f"task {task.name!r} is not a module-level name of an importable module, so its folder records "
                  "no task_module: a process loading it must call kexue.recipes.register_task(TASK) first (or "
                  "declare the task in a module, or pass task_module='package.module:TASK')", stacklevel=3)
    return None


# -- the tasks this process knows -----------------------------------------------------------------------
_REGISTERED: dict[str, Task] = {}


def register_task(task: Task, replace: bool = False) -> Task:
    """Make ``task`` known to this process: a folder of its name that records no ``task_module`` loads with
    it. Registering another task under a name already taken needs ``replace=True``."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a kexue.recipes.Task, got {type(task).__name__}")
    old = _REGISTERED.get(task.name)
    if old is not None and old is not task and not replace:
        raise ValueError(f"another task named {task.name!r} is registered already; pass replace=True to replace it")
    _REGISTERED[task.name] = task
    return task


def registered_tasks() -> dict[str, Task]:
    return dict(_REGISTERED)


def _inside(path: str | os.PathLike, folder: Path) -> bool:
    try:
        return Path(path or os.getcwd()).resolve().is_relative_to(folder)
    except (OSError, RuntimeError):
        return False


def _import_outside(name: str, directory: Path, where: Path):
    """``importlib.import_module(name)`` with every ``sys.path`` entry inside ``directory`` left out; a module
    (or one of its packages) that still comes from inside it is refused."""
    folder = directory.resolve()
    removed = [(i, p) for i, p in enumerate(sys.path) if _inside(p, folder)]
    for i, _ in reversed(removed):
        del sys.path[i]
    try:
        module = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any failure to import is the user's module, named in one line
        detail = " ".join(f"{type(e).__name__}: {e}".split())
        raise FolderError(f"{where}: field 'task_module': cannot import module {name!r} ({detail}); install the "
                          "package that declares the task or put it on PYTHONPATH") from None
    finally:
        for i, p in removed:
            sys.path.insert(i, p)
    parts = name.split(".")
    for k in range(1, len(parts) + 1):
        m = sys.modules.get(".".join(parts[:k]))
        for f in [getattr(m, "__file__", None), *list(getattr(m, "__path__", None) or [])]:
            if f and _inside(f, folder):
                raise FolderError(f"{where}: field 'task_module': module {'.'.join(parts[:k])!r} comes from inside "
                                  f"the model folder ({f}); kexue never runs code from a model folder")
    return module


def resolve_task(name: str, ref: str | None, directory: str | os.PathLike) -> Task:
    """The :class:`Task` of a custom folder: ``ref`` (its manifest's ``task_module``) imported by name, else
    the task registered in this process as ``name``; each failure one :class:`FolderError` line."""
    directory = Path(directory)
    where = directory / MANIFEST
    if ref is None:
        task = _REGISTERED.get(name)
        if task is None:
            raise FolderError(f"{where}: custom task {name!r} is not registered in this process and the folder "
                              "records no task_module; call kexue.recipes.register_task(TASK) before loading it, "
                              "or save it with task_module='package.module:TASK'")
        return task
    module_name, attr = ref.split(":")
    module = _import_outside(module_name, directory, where)
    if not hasattr(module, attr):
        raise FolderError(f"{where}: field 'task_module': module {module_name!r} has no attribute {attr!r}")
    task = getattr(module, attr)
    if not isinstance(task, Task):
        raise FolderError(f"{where}: field 'task_module': {ref} is of type {type(task).__name__}, not a "
                          "kexue.recipes.Task")
    if task.name != name:
        raise FolderError(f"{where}: field 'task_module': {ref} is the task {task.name!r}, but the folder holds a "
                          f"{name!r} model")
    return task


# -- serving -----------------------------------------------------------------------------------------------
class CustomPredictor(Predictor):
    """The predictor of a custom folder: ``check`` is the task's input check, ``predict`` its ``predict``
    (no grad, eval mode) with the outputs checked. Each :class:`Task` has its own subclass
    (:func:`predictor_class`), which :func:`kexue.load` picks from the folder's manifest."""

    task = "custom"
    model_attr = "task_model"
    definition: Task | None = None  # the Task of a per-task subclass

    @classmethod
    def for_folder(cls, info) -> type["CustomPredictor"]:
        return predictor_class(resolve_task(info.task, info.task_module, info.directory))

    @classmethod
    def from_folder(cls, directory) -> "CustomPredictor":
        task = cls.definition
        if task is None:
            raise TypeError("CustomPredictor.from_folder: load a custom folder with kexue.load")
        directory = Path(directory)
        info = read_task(directory, required=False)
        settings = task.check_settings(info.get("settings", {}), directory / TASK_FILE)
        labels = task.check_labels(info.get("labels"))
        backbone, tokenizer = load_backbone(directory)
        model = TaskModel(task, backbone, task.make_head(backbone, settings, labels), tokenizer, settings, labels)
        if head_state(model, "backbone"):
            load_head(directory, model, "backbone")
        return cls(model)

    def __init__(self, model: TaskModel):
        self.task_model, self.task, self.definition = model.eval(), model.task.name, model.task

    def check(self, item: Any) -> Any:
        return self.definition.check_input(item)

    def _predict(self, items: list, **_) -> list[dict]:
        model = self.task_model.eval()
        with torch.no_grad():
            outputs = self.definition.predict(model, items)
        return self.definition.check_outputs(outputs, len(items))


_CLASSES: dict[Task, type] = {}


def predictor_class(task: Task) -> type[CustomPredictor]:
    """The :class:`CustomPredictor` subclass of ``task``: its settings' types and labels are what
    :func:`kexue.recipes.folder.check_task` checks in a folder before anything is built."""
    cls = _CLASSES.get(task)
    if cls is None:
        cls = type(f"CustomPredictor[{task.name}]", (CustomPredictor,),
                   {"definition": task, "task": task.name, "settings_schema": dict(task.settings),
                    "needs_labels": task.needs_labels, "__module__": __name__})
        _CLASSES[task] = cls
    return cls


__all__ = ["CustomPredictor", "Task", "TaskError", "TaskModel", "find_module", "predictor_class", "register_task",
           "registered_tasks", "resolve_task"]
