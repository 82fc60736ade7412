"""The recipes' runs (:mod:`kexue.recipes.common`): Ctrl-C then the same command equals an uninterrupted run;
changed settings refused naming each difference; ``--resume`` on a finished run changes nothing and says so;
a changed model shape refused under ``--resume`` before anything is built; the best --dev epoch is what gets
saved; early stopping; the before/after check of a fine-tune from a pretrained model (``--refuse-worse``);
one ``--checkpoint`` grammar (folder, shipped name, hub id) with start-dependent learning-rate defaults."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kexue
from kexue.cli import main as cli
from kexue.io import holds_model
from kexue.models.pretrained import zh_mini_path
from kexue.train.state import read_progress
from recipes_common import TASKS, other_command, refused, results, task_command, tree

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)


def metrics(out):
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def test_ctrl_c_then_the_same_command_equals_uninterrupted_and_changes_are_named(files, tmp_path, monkeypatch, capsys):
    import kexue.train.loop as loop

    argv = task_command("classify", files, 3, True, "--checkpoint-every", "2")
    cut, straight = tmp_path / "cut", tmp_path / "straight"
    real, saves = loop.save_state, []

    def interrupted(state, path):  # Ctrl-C right after the second checkpoint (step 4 of 6)
        real(state, path)
        saves.append(state["progress"]["step"])
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_state", interrupted)
    assert cli([*argv, "--out", str(cut)]) == 130
    monkeypatch.undo()
    assert saves == [2, 4] and read_progress(cut / "train" / "state.safetensors")["step"] == 4
    assert not holds_model(cut)
    before = tree(cut)
    changed = task_command("classify", files, 4, True, "--checkpoint-every", "2", "--lr", "0.01", "--seed", "1")
    refused(capsys, [*changed, "--out", str(cut)], "epochs: 3 -> 4", "lr: 0.001 -> 0.01", "steps: 6 -> 8",
            "seed: 0 -> 1", "--resume", "--overwrite")
    assert tree(cut) == before  # nothing touched
    assert cli([*argv, "--out", str(cut)]) == 0
    assert cli([*argv, "--out", str(straight)]) == 0
    assert results(cut) == results(straight)


@pytest.mark.parametrize("name", ["classify", "similarity", "pretrain", "diffusion"])
def test_resume_on_a_finished_run_changes_nothing_and_says_so(files, tmp_path, name, capsys):
    out = tmp_path / "out"
    argv = (task_command(name, files, 1) if name in TASKS else other_command(name, files)) + ["--out", str(out)]
    assert cli(argv) == 0
    before = tree(out)
    assert "train/settings.json" in before and "train/state.safetensors" in before
    for extra in ([], ["--lr", "0.5"] if name != "diffusion" else ["--checkpoint-every", "1"]):
        capsys.readouterr()
        assert cli([*argv, "--resume", *extra]) == 0
        err = capsys.readouterr().err
        assert "nothing to train" in err and f"{out} is left as it is" in err, err
        if extra and name != "diffusion":
            assert "lr: " in err and "would train nothing" in err
        assert tree(out) == before  # settings.json included: not rewritten
    if name == "classify":  # more epochs: --resume trains on from the finished run
        assert cli([*task_command(name, files, 2), "--out", str(out), "--resume"]) == 0
        assert [r["step"] for r in metrics(out)["dev_curve"]] == [2, 4] and len(metrics(out)["loss"]) == 2


@pytest.mark.parametrize("name, change, words", [
    ("poem", ["--cond-dim", "32"], ["architecture.cond_dim: 16 -> 32"]),
    ("similarity", ["--loss", "sbert"], ["architecture.loss: \"cosent\" -> \"sbert\""]),
    ("pretrain", ["--hidden", "64", "--heads", "4"], ["hidden: 32 -> 64", "heads: 2 -> 4"]),
    ("diffusion", ["--width", "16"], ["architecture.width: 8 -> 16"]),
    ("multimodal", ["--layers", "2"], ["architecture.layers: 1 -> 2"]),
])
def test_resume_refuses_a_changed_model_shape_by_name(files, tmp_path, name, change, words, capsys):
    out = tmp_path / "out"
    argv = (task_command(name, files, 1) if name in TASKS else other_command(name, files)) + ["--out", str(out)]
    assert cli(argv) == 0
    before = tree(out)
    refused(capsys, [*argv, *change, "--resume"], "--resume", "--overwrite", *words)
    assert tree(out) == before


def test_the_best_dev_epoch_is_saved(files, tmp_path):
    """Poem perplexity on the dev slice falls until epoch 5 and rises at 6: the saved model is epoch 5's."""
    out = tmp_path / "out"
    assert cli([*task_command("poem", files, 6), "--out", str(out)]) == 0
    m = metrics(out)
    curve = [r["perplexity"] for r in m["dev_curve"]]
    best = min(range(len(curve)), key=curve.__getitem__)
    assert len(curve) == 6 and best < 5 and curve[best] < curve[-1]  # the best is not the last epoch
    assert m["saved_weights"] == "best" and m["best"]["step"] == m["dev_curve"][best]["step"]
    # the final evaluation of the saved model gives the best epoch's perplexity, not the last one's
    assert m["eval_perplexity"] == pytest.approx(curve[best], rel=1e-6)
    assert m["eval_perplexity"] != pytest.approx(curve[-1], rel=1e-3)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"saved weights: the best --dev evaluation, step {m['best']['step']}" in card
    assert "dev perplexity by epoch: 1: " in card
    # without --dev the last epoch is saved (the shipped split scored all the same)
    out2 = tmp_path / "last"
    assert cli([*task_command("poem", files, 2, False), "--out", str(out2)]) == 0
    assert metrics(out2)["saved_weights"] == "last" and len(metrics(out2)["dev_curve"]) == 2
    assert "saved weights: the last step" in (out2 / "README.md").read_text(encoding="utf-8")


def test_early_stopping_stops_and_stays_stopped(files, tmp_path, capsys):
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli([*task_command("poem", files, 6), "--patience", "1", "--out", str(out)]) == 0
    assert "early stop (--patience 1)" in capsys.readouterr().out
    m = metrics(out)
    curve = [r["perplexity"] for r in m["dev_curve"]]
    assert m["stopped_early"] and len(curve) < 6 and curve[-1] >= min(curve[:-1])  # stopped at the first worse one
    assert all(curve[i] < curve[i - 1] for i in range(1, len(curve) - 1))
    assert len(m["loss"]) == len(curve) and m["best"]["step"] == m["dev_curve"][-2]["step"]
    assert read_progress(out / "train" / "state.safetensors")["stopped"] is True
    assert "early stopping: stopped at step" in (out / "README.md").read_text(encoding="utf-8")
    before = tree(out)
    capsys.readouterr()
    assert cli([*task_command("poem", files, 6), "--patience", "1", "--out", str(out), "--resume"]) == 0
    assert "nothing to train" in capsys.readouterr().err and tree(out) == before
    refused(capsys, [*task_command("poem", files, 6, False), "--patience", "1", "--out", str(tmp_path / "x")],
            "--patience", "--dev")


@pytest.mark.parametrize("name", ["dialogue", "similarity"])
def test_a_harmful_fine_tune_is_reported_worse_and_refuse_worse_saves_nothing(files, tmp_path, name, capsys):
    out = tmp_path / "out"
    argv = [*task_command(name, files, 1), "--checkpoint", "zh-mini", "--lr", "0.3"]
    capsys.readouterr()
    assert cli([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "WARNING: the fine-tuned model scores worse" in err and "--refuse-worse" in err
    m = metrics(out)
    metric = m["dev_metric"]
    assert m["worse_than_start"] is True
    before, after = m["dev_before_training"][metric], m["dev_after_training"][metric]
    assert (after > before) if metric == "perplexity" else (after < before)
    assert "**WORSE than the pretrained start**" in (out / "README.md").read_text(encoding="utf-8")
    refused(capsys, [*argv, "--out", str(tmp_path / "refused"), "--refuse-worse"], "worse", "nothing saved",
            "--refuse-worse", f"{before:.4f} before training")
    assert not holds_model(tmp_path / "refused")
    # the same fine-tune at the pretrained default learning rate is not worse, and is saved under --refuse-worse
    if name == "dialogue":
        ok = tmp_path / "ok"
        assert cli([*task_command(name, files, 1), "--checkpoint", "zh-mini", "--refuse-worse", "--out", str(ok)]) == 0
        assert metrics(ok)["worse_than_start"] is False and holds_model(ok)


@pytest.mark.parametrize("name", TASKS)
def test_every_recipe_fine_tunes_a_shipped_model_with_the_pretrained_defaults(files, tmp_path, name):
    out = tmp_path / "out"
    assert cli([*task_command(name, files, 1), "--checkpoint", "zh-mini", "--out", str(out)]) == 0
    settings = json.loads((out / "train" / "settings.json").read_text(encoding="utf-8"))
    assert settings["architecture"]["start"] == "zh-mini"
    assert (settings["lr"], settings["warmup"]) == (2e-5, 0.06)
    assert settings["optimizer_preset"]["lr"] == 2e-5
    m = metrics(out)
    assert m["dev_metric"] in m["dev_before_training"] and m["worse_than_start"] in (True, False)
    assert (out / "vocab.txt").read_bytes() == (zh_mini_path() / "vocab.txt").read_bytes()
    assert "before fine-tuning" in (out / "README.md").read_text(encoding="utf-8")
    kexue.load(out)  # a complete folder


def test_from_scratch_defaults_and_a_checkpoint_folder(files, tmp_path):
    scratch, folder = tmp_path / "scratch", tmp_path / "folder"
    assert cli([*task_command("ner", files, 1), "--out", str(scratch)]) == 0
    settings = json.loads((scratch / "train" / "settings.json").read_text(encoding="utf-8"))
    assert (settings["lr"], settings["warmup"], settings["architecture"]["start"]) == (2e-3, 0.1, "roformer from scratch")
    assert "dev_before_training" not in metrics(scratch)
    assert cli([*task_command("classify", files, 1), "--checkpoint", str(zh_mini_path()), "--out", str(folder)]) == 0
    settings = json.loads((folder / "train" / "settings.json").read_text(encoding="utf-8"))
    assert settings["architecture"]["start"] == str(zh_mini_path()) and settings["lr"] == 2e-5


@pytest.mark.parametrize("name", [*TASKS, "pretrain"])
def test_help_shows_the_start_dependent_defaults(name, capsys):
    capsys.readouterr()
    assert cli([name, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    if name == "pretrain":
        assert "--init MODEL start from this model instead of random weights: a folder (kexue/HF layout), a hub id " \
               "org/name[@revision], or a shipped model: minilm," in text
        return
    assert "from scratch, 2e-05 from a pretrained --checkpoint)" in text
    assert "(default: 0.1 from scratch, 0.06 from a pretrained --checkpoint)" in text
    assert "a hub id org/name[@revision], or a shipped model: minilm, zh-mini" in text
    for option in ("--resume", "--overwrite", "--patience", "--eval-every", "--refuse-worse", "--checkpoint-every"):
        assert option in text


HUB_RUN = """
import json, sys
from kexue.cli import dispatch
import torch
torch.set_num_threads(1)
for argv in json.loads(sys.argv[1]):
    assert dispatch(argv) == 0, argv
"""


def test_every_recipe_takes_a_hub_id(files, tmp_path):
    """``--checkpoint org/name`` through kexue.hub, from a local stand-in hub (a fresh interpreter, as
    huggingface_hub reads HF_ENDPOINT on import)."""
    from hub_server import Hub

    hub = Hub({"kexue/zh-mini": {"main": str(zh_mini_path())}})
    url = hub.start()
    try:
        runs = [[*task_command(name, files, 1), "--checkpoint", "kexue/zh-mini", "--out", str(tmp_path / name)]
                for name in TASKS]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=url, HF_HUB_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="0",
                   HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        r = subprocess.run([sys.executable, "-c", HUB_RUN, json.dumps(runs)], env=env, capture_output=True, text=True,
                           timeout=900, cwd=REPO)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        hub.server.shutdown()
    for name in TASKS:
        settings = json.loads((tmp_path / name / "train" / "settings.json").read_text(encoding="utf-8"))
        start = Path(settings["architecture"]["start"])
        assert start.is_relative_to(tmp_path / "cache") and (start / "config.json").is_file()
        assert settings["lr"] == 2e-5
        assert (tmp_path / name / "vocab.txt").read_bytes() == (zh_mini_path() / "vocab.txt").read_bytes()
