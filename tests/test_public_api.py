"""The public face is small, typed and lazy; import paths users may have written keep working."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import kexue
from kexue import _legacy

REPO = Path(__file__).resolve().parents[1]


def test_import_kexue_loads_no_torch():
    code = "import sys, kexue; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_the_face():
    from kexue.generation import generate
    from kexue.models import build_model
    from kexue.recipes.predictor import load
    from kexue.text.tokenizer import Tokenizer
    from kexue.train import fit

    assert kexue.build_model is build_model and kexue.Tokenizer is Tokenizer and kexue.generate is generate
    assert kexue.fit is fit and callable(kexue.capture) and kexue.load.__doc__
    from kexue.recipes.custom import Task, register_task

    assert load is not None and sorted(kexue.__all__) == ["Task", "Tokenizer", "build_model", "capture", "fit",
                                                          "generate", "load", "register_task"]
    assert kexue.Task is Task and kexue.register_task is register_task
    recipes = importlib.import_module("kexue.recipes")
    assert recipes.Task is Task and recipes.register_task is register_task
    assert kexue.recipes.Task is Task and kexue.recipes.register_task is register_task
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        kexue.nothing  # noqa: B018


def test_typed():
    assert (REPO / "kexue" / "py.typed").is_file()
    assert "py.typed" in (REPO / "pyproject.toml").read_text()


@pytest.mark.parametrize("old,new", sorted(_legacy.MOVED.items()))
def test_old_paths_are_the_new_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_old_spellings_users_wrote():
    from kexue.checkpoints import save_pretrained  # noqa: F401
    from kexue.generation import generate  # noqa: F401
    from kexue.models import build_model  # noqa: F401
    from kexue.pretrained import embed, minilm  # noqa: F401
    from kexue.tokenizers import Tokenizer  # noqa: F401
    from kexue.train import fit  # noqa: F401

    import kexue.capture  # the callable module

    assert callable(kexue.capture)


def test_python_dash_m_kexue():
    out = subprocess.run([sys.executable, "-m", "kexue", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "commands:" in out.stdout and "similarity" in out.stdout
