"""A task of the user's own (kexue.recipes.Task): the complete example of docs/custom-tasks.md, run as written on a
slice of Chinese STS-B with kexue-zh-mini, gives the training process's own predictions bit for bit through
kexue.load in a fresh process, `kexue predict` in another and `kexue serve`'s app; and every refusal (a task
module that cannot be imported, code inside the folder, an unregistered task, a head that does not fit, bad
inputs and outputs) is one line naming what is wrong."""
from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import kexue
from kexue.io import FolderError
from kexue.models import TransformerConfig, build_model
from kexue.recipes.custom import Task, TaskError, TaskModel, register_task, resolve_task
from kexue.text.tokenizer import Tokenizer, build_vocab

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "custom-tasks.md"
INPUTS = [["今天天气很好", "今天天气不错"], {"text_a": "我爱北京", "text_b": "北京是我爱的城市"},
          ["一个男人在弹吉他。", "一个人在弹吉他。"], ["猫在睡觉", "股市今天大跌"]]


def doc_file(name: str) -> str:
    """The code block of docs/custom-tasks.md whose first line is ``# name``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if b.startswith(f"# {name}\n")]
    assert len(found) == 1, f"docs/custom-tasks.md has no single block for {name}"
    return found[0]


def env(*paths) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *map(str, paths)]), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The doc's sts_task.py + train_sts.py, run in this process on 48 pairs for one epoch."""
    torch.set_num_threads(1)
    code = tmp_path_factory.mktemp("code")
    for name in ("sts_task.py", "train_sts.py"):
        (code / name).write_text(doc_file(name), encoding="utf-8")
    out = tmp_path_factory.mktemp("runs") / "sts-score"
    argv, path = sys.argv, list(sys.path)
    sys.argv = ["train_sts.py", "--limit", "48", "--epochs", "1", "--out", str(out)]
    sys.path.insert(0, str(code))
    try:
        scope = runpy.run_path(str(code / "train_sts.py"), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, path
    expected = scope["model"].predictor().predict(INPUTS)
    yield code, out, scope, expected
    sys.modules.pop("sts_task", None)


def test_the_folder_is_one_custom_unit(trained):
    code, out, scope, expected = trained
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "custom" and manifest["task"] == "sts-score"
    assert manifest["task_module"] == "sts_task:TASK" and manifest["labels"] is None
    assert {"config.json", "model.safetensors", "vocab.txt", "head.safetensors", "task.json", "metrics.json",
            "loss.png", "README.md"} <= set(manifest["files"])
    assert json.loads((out / "task.json").read_text(encoding="utf-8")) == {"settings": {"maxlen": 64, "scale": 5.0}}
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_train"] == 48 and metrics["steps"] == 2 and -1 <= metrics["valid_spearman"] <= 1
    assert [set(o) for o in expected] == [{"text_a", "text_b", "score"}] * len(INPUTS)
    assert all(0 < o["score"] < 5 for o in expected)
    # the head really was trained and saved: the loaded head equals the trained one
    loaded = kexue.load(out)
    assert type(loaded).__name__ == "CustomPredictor[sts-score]" and loaded.task == "sts-score"
    trained_head = scope["model"].head.state_dict()
    assert all(torch.equal(v, trained_head[k]) for k, v in loaded.model.head.state_dict().items())
    assert loaded.predict(INPUTS) == expected


def test_fresh_process_load_predict_and_serve_give_the_same_outputs(trained, tmp_path):
    """kexue.load + predict and the serve app in a fresh process, `kexue predict` in another."""
    code, out, _, expected = trained
    script = textwrap.dedent(f"""
        import json, sys
        import torch
        torch.set_num_threads(1)
        import kexue
        from fastapi.testclient import TestClient
        from kexue.cli.serve import create_app
        inputs = json.loads(sys.stdin.read())
        predictor = kexue.load({str(out)!r})
        direct = predictor.predict(inputs)
        with TestClient(create_app(predictor, "sts")) as client:
            health = client.get("/health").json()
            served = client.post("/predict", json={{"inputs": inputs}})
            bad = client.post("/predict", json={{"inputs": ["one text"]}})
            option = client.post("/predict", json={{"inputs": inputs[:1], "options": {{"top_k": 3}}}})
        print(json.dumps({{"direct": direct, "health": health, "served": served.json(), "status": served.status_code,
                          "bad": [bad.status_code, bad.json()], "option": [option.status_code, option.json()]}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], input=json.dumps(INPUTS), capture_output=True, text=True,
                         env=env(code), cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["direct"] == expected
    assert got["status"] == 200 and got["served"] == {"outputs": expected}
    assert got["health"]["status"] == "ok" and got["health"]["task"] == "sts-score"
    assert got["bad"] == [400, {"error": 'an input is a pair of non-empty texts: ["text a", "text b"]'}]
    assert got["option"][0] == 400 and "option 'top_k' does not apply to sts-score models" in got["option"][1]["error"]

    src, dst = tmp_path / "inputs.jsonl", tmp_path / "preds.jsonl"
    src.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in INPUTS), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "kexue", "predict", str(out), "--input", str(src), "--output", str(dst),
                          "--threads", "1"], capture_output=True, text=True, env=env(code), cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()] == expected


def test_a_task_module_that_cannot_be_imported_is_refused_in_one_line(trained, tmp_path):
    _, out, _, _ = trained
    run = subprocess.run([sys.executable, "-m", "kexue", "predict", str(out), '["a", "b"]'], capture_output=True,
                         text=True, env=env(), cwd=tmp_path, timeout=300)  # sts_task is not on the path
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == (f"kexue: error: {out / 'manifest.json'}: field 'task_module': cannot import module "
                          "'sts_task' (ModuleNotFoundError: No module named 'sts_task'); install the package that "
                          "declares the task or put it on PYTHONPATH\n")


# --- the refusals, on a tiny model --------------------------------------------------------------------
def tiny():
    torch.manual_seed(0)
    tok = Tokenizer(build_vocab(["今天天气很好不错我爱北京"]))
    config = TransformerConfig.from_dict(dict(model_type="bert", vocab_size=tok.vocab_size, hidden_size=16,
                                              num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    return build_model(config), tok


def classify(model, texts):
    batch = model.tokenizer.encode_batch(texts, maxlen=16)
    h = model.backbone(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).hidden[:, 0]
    probs = model.head(h).softmax(-1)
    return [{"label": model.labels[int(p.argmax())], "p": float(p.max())} for p in probs]


LABELLED = Task("tiny-labels", head=lambda hidden, settings, labels: nn.Linear(hidden, len(labels)),
                predict=classify, outputs={"label": "string", "p": "number"}, needs_labels=True)


def module_file(folder: Path, name: str, text: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(text), encoding="utf-8")
    return name


def test_labels_are_recorded_and_must_fit_the_head(tmp_path):
    backbone, tok = tiny()
    model = LABELLED.build(backbone, tok, labels=["好", "坏", "中"])
    out = model.save(tmp_path / "m")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["labels"] == ["好", "坏", "中"] and manifest["task_module"] == f"{__name__}:LABELLED"
    assert kexue.load(out).predict(["今天很好"]) == model.predictor().predict(["今天很好"])
    with pytest.raises(ValueError, match="task 'tiny-labels' needs labels"):
        LABELLED.build(backbone, tok)
    # a head of 2 rows saved under 3 labels: refused naming the head file, by name and shape
    wrong = TaskModel(LABELLED, backbone, nn.Linear(16, 2), tok, {}, ["好", "坏", "中"])
    wrong.save(tmp_path / "wrong")
    with pytest.raises(ValueError, match=r"head\.safetensors does not fit the task head: shape mismatch .*head\.weight"):
        kexue.load(tmp_path / "wrong")


def test_unregistered_task_and_registration(tmp_path):
    def echo(model, texts):
        return [{"n": len(t)} for t in texts]

    task = Task("tiny-echo", head=lambda hidden, s, l: nn.Linear(hidden, 1), predict=echo, outputs={"n": "integer"})
    backbone, tok = tiny()
    with pytest.warns(UserWarning, match="records no task_module"):  # a task of no importable module
        out = task.build(backbone, tok).save(tmp_path / "m")
    assert "task_module" not in json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    with pytest.raises(FolderError, match="custom task 'tiny-echo' is not registered in this process and the folder "
                                          "records no task_module"):
        kexue.load(out)
    register_task(task)
    assert kexue.load(out).predict(["ab", "abc"]) == [{"n": 2}, {"n": 3}]
    other = Task("tiny-echo", head=lambda hidden, s, l: nn.Linear(hidden, 1), predict=echo)
    with pytest.raises(ValueError, match="another task named 'tiny-echo' is registered already"):
        register_task(other)
    assert register_task(other, replace=True) is other


def test_task_module_refusals(tmp_path, monkeypatch):
    backbone, tok = tiny()
    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.syspath_prepend(str(code))
    module_file(code, "ct_not_a_task", "TASK = 42\n")
    module_file(code, "ct_other_name", """
        from torch import nn
        from kexue.recipes import Task
        TASK = Task("tiny-other", head=lambda h, s, l: nn.Linear(h, 1), predict=lambda m, x: [{} for _ in x])
        """)
    module_file(code, "ct_broken", "raise RuntimeError('boom')\n")
    cases = {"ct_missing_module:TASK": "cannot import module 'ct_missing_module' (ModuleNotFoundError: No module "
                                       "named 'ct_missing_module')",
             "ct_broken:TASK": "cannot import module 'ct_broken' (RuntimeError: boom)",
             "ct_not_a_task:NOPE": "module 'ct_not_a_task' has no attribute 'NOPE'",
             "ct_not_a_task:TASK": "ct_not_a_task:TASK is of type int, not a kexue.recipes.Task",
             "ct_other_name:TASK": "ct_other_name:TASK is the task 'tiny-other', but the folder holds a 'tiny-labels' "
                                   "model"}
    for i, (ref, message) in enumerate(cases.items()):
        out = LABELLED.build(backbone, tok, labels=["a", "b"]).save(tmp_path / f"m{i}", task_module=ref)
        with pytest.raises(FolderError) as e:
            kexue.load(out)
        assert str(e.value) == f"{out / 'manifest.json'}: field 'task_module': {message}" + (
            "; install the package that declares the task or put it on PYTHONPATH" if "cannot import" in message else "")
    with pytest.raises(ValueError, match="task_module must be 'package.module:ATTRIBUTE'"):
        LABELLED.build(backbone, tok, labels=["a"]).save(tmp_path / "bad", task_module="not a module")


def test_code_inside_the_model_folder_is_never_run(tmp_path, monkeypatch):
    """A folder carrying its own task module (listed in its manifest) on the path, even as the current folder:
    the module is not imported from it, and nothing in it runs."""
    backbone, tok = tiny()
    marker = tmp_path / "ran"
    evil = f"open({str(marker)!r}, 'w').write('x')\nfrom test_custom_task import LABELLED as TASK\n"
    out = LABELLED.build(backbone, tok, labels=["a", "b"]).save(tmp_path / "m", task_module="ct_evil:TASK",
                                                                 files={"ct_evil.py": evil})
    monkeypatch.syspath_prepend(str(out))
    monkeypatch.chdir(out)
    monkeypatch.syspath_prepend("")
    with pytest.raises(FolderError, match="cannot import module 'ct_evil' .*No module named 'ct_evil'"):
        kexue.load(out)
    assert not marker.exists()
    assert str(out) in sys.path and "" in sys.path  # the path is restored
    # a module already imported from inside the folder is refused too
    monkeypatch.setitem(sys.modules, "ct_evil", type(sys)("ct_evil"))
    sys.modules["ct_evil"].__file__ = str(out / "ct_evil.py")
    sys.modules["ct_evil"].TASK = LABELLED
    with pytest.raises(FolderError, match="module 'ct_evil' comes from inside the model folder .*kexue never runs "
                                          "code from a model folder"):
        resolve_task("tiny-labels", "ct_evil:TASK", out)


def test_inputs_outputs_and_declarations_are_checked(tmp_path):
    backbone, tok = tiny()
    predictor = LABELLED.build(backbone, tok, labels=["a", "b"]).predictor()
    with pytest.raises(ValueError, match=r"a tiny-labels input must be a string, got \[1, 2\]"):
        predictor.predict([[1, 2]])
    with pytest.raises(ValueError, match="option 'num_beams' does not apply to tiny-labels models"):
        predictor.predict(["今天"], num_beams=2)
    outputs = {"not a list": {"x": 1}, "wrong count": [], "undeclared": [{"label": "a", "p": 1.0, "extra": 1}],
               "missing": [{"label": "a"}], "wrong type": [{"label": 1, "p": 1.0}],
               "not JSON": [{"label": "a", "p": float("nan")}]}
    messages = {"not a list": "returned a dict for 1 inputs", "wrong count": "returned 0 outputs for 1 inputs",
                "undeclared": "output 0 has the undeclared field 'extra'", "missing": "output 0 lacks the field 'p'",
                "wrong type": "output 0 field 'label' must be a string, got 1",
                "not JSON": "output 0 is not JSON"}
    for case, value in outputs.items():
        bad = Task("tiny-bad", head=lambda h, s, l: nn.Linear(h, 1), predict=lambda m, x, v=value: v,
                   outputs={"label": "string", "p": "number"})
        with pytest.raises(TaskError, match=re.escape(f"task 'tiny-bad': predict {messages[case]}")
                           if case in ("not a list", "wrong count") else re.escape(messages[case])):
            bad.build(backbone, tok).predictor().predict(["今天"])
    head = lambda h, s, l: nn.Linear(h, 1)  # noqa: E731
    declarations = [(dict(name="ner"), "Task name 'ner' is one of kexue's own tasks"),
                    (dict(name="Bad Name"), "Task name 'Bad Name': lower-case letters"),
                    (dict(name="t", inputs="text"), "Task 't': inputs: 'text' is not a JSON type"),
                    (dict(name="t", outputs={"x": "float"}), "Task 't': outputs['x']: 'float' is not a JSON type"),
                    (dict(name="t", module="pkg.mod"), "Task 't': module must be 'package.module:ATTRIBUTE'")]
    for kwargs, message in declarations:
        with pytest.raises(ValueError, match=re.escape(message)):
            Task(**{"head": head, "predict": classify, **kwargs})
    with pytest.raises(TypeError, match="predict must be a function"):
        Task("t", head=head, predict=None)
    typed = Task("tiny-typed", head=head, predict=classify, settings={"maxlen": "integer"})
    for settings, message in [({}, "setting 'maxlen' of task 'tiny-typed' is missing"),
                              ({"maxlen": "64"}, "setting 'maxlen' of task 'tiny-typed' must be an integer, got \"64\""),
                              ({"maxlen": 64, "other": 1}, "task 'tiny-typed' has no setting 'other'")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            typed.build(backbone, tok, settings=settings)
    with pytest.raises(TypeError, match="declares no forward"):
        typed.build(backbone, tok, settings={"maxlen": 8})(["x"])


def test_the_manifest_field_task_module_is_checked():
    from kexue.io import folder_info

    assert folder_info("custom", "t", task_module="pkg.mod:TASK")["task_module"] == "pkg.mod:TASK"
    assert "task_module" not in folder_info("task", "ner") and "task_module" not in folder_info("custom", "t")
    with pytest.raises(FolderError, match="field 'task_module' is only for a folder of kind 'custom', not 'task'"):
        folder_info("task", "ner", task_module="pkg.mod:TASK")
    for bad in ("pkg/mod.py:TASK", "pkg.mod", "../mod:TASK", "pkg.mod:TASK:X"):
        with pytest.raises(FolderError, match="field 'task_module' must be 'package.module:ATTRIBUTE'"):
            folder_info("custom", "t", task_module=bad)
