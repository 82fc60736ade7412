"""The training tricks of the recipes (kexue.recipes.tricks) on real data slices: each option parsed, recorded in
the run settings and the metrics, refused when changed on resume, refused by name where it does not apply; a run
of ``kexue classify`` with FGM + R-Drop + layer-wise LR decay + recompute where each one visibly took effect;
recompute leaves the result unchanged."""
import json
import re

import pytest
import torch

import kexue.models.base as base
import kexue.recipes.common as common
from kexue.cli import main as cli
from kexue.recipes import tricks
from kexue.recipes.common import parse, recipe_args
from kexue.train.adversarial import FGM
from recipes_common import refused, results, task_command


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_options_parse_with_method_defaults():
    p = recipe_args("x", out="runs/classify", epochs=1, supports=("rdrop", "vat"))
    a = parse(p, ["--adversarial", "pgd", "--adv-steps", "5", "--layer-lr-decay", "0.9", "--lr-multiplier",
                  r"encoder\.embeddings=0.1", "--lr-multiplier", "out=10", "--recompute", "--rdrop", "4"])
    assert (a.adversarial, a.adv_epsilon, a.adv_steps, a.adv_alpha) == ("pgd", 1.0, 5, 0.3)
    assert a.lr_multiplier == [(r"encoder\.embeddings", 0.1), ("out", 10.0)] and a.recompute and a.rdrop == 4.0
    assert tricks.record(a) == {"adversarial": {"method": "pgd", "epsilon": 1.0, "steps": 5, "alpha": 0.3,
                                                "include_clean": False},
                                "layer_lr_decay": 0.9, "lr_multipliers": [[r"encoder\.embeddings", 0.1], ["out", 10.0]],
                                "rdrop": 4.0}
    v = parse(p, ["--adversarial", "vat", "--adv-xi", "5"])
    assert (v.adv_xi, v.adv_iters, v.adv_weight) == (5.0, 1, 1.0)
    plain = parse(p, [])
    assert tricks.record(plain) == {} and tricks.card_lines(plain) == []


@pytest.mark.parametrize("argv,words", [
    (["poem", "--rdrop", "1"], ["kexue poem: --rdrop does not apply here", "kexue classify"]),
    (["dialogue", "--adversarial", "vat"], ["kexue dialogue: --adversarial vat does not apply here"]),
    (["ner", "--adversarial", "vat"], ["kexue ner: --adversarial vat", "independent sigmoids"]),
    (["similarity", "--train", "x", "--adversarial", "vat"], ["--adversarial vat does not apply", "vector"]),
    (["classify", "--adversarial", "fgm", "--adv-steps", "5"], ["--adv-steps applies to --adversarial pgd, not fgm"]),
    (["classify", "--adv-xi", "5"], ["--adv-xi applies to --adversarial vat"]),
    (["classify", "--adv-epsilon", "0.5"], ["--adv-epsilon needs --adversarial"]),
    (["classify", "--adversarial", "gp", "--adv-include-clean"], ["--adv-include-clean applies to --adversarial fgm / pgd"]),
    (["classify", "--lr-multiplier", "out"], ["--lr-multiplier", "expected PATTERN=MULT"]),
    (["classify", "--lr-multiplier", "(=2"], ["--lr-multiplier", "not a regular expression"]),
    (["classify", "--lr-multiplier", "out=-1"], ["--lr-multiplier", "must be"]),
    (["classify", "--layer-lr-decay", "0"], ["--layer-lr-decay must be in (0, 1]"]),
    (["classify", "--adversarial", "xyz"], ["--adversarial", "invalid choice"]),
])
def test_refused_by_name_while_parsing(argv, words, capsys, tmp_path):
    if argv[0] == "similarity":
        (tmp_path / "x").write_text("a\tb\t1\n", encoding="utf-8")
        argv = ["similarity", "--train", str(tmp_path / "x"), *argv[3:]]
    refused(capsys, [*argv, "--out", str(tmp_path / "out")], *words)


def test_refused_by_name_on_the_data(files, tmp_path, capsys):
    refused(capsys, [*task_command("similarity", files, 1, True, "--rdrop", "1"), "--out", str(tmp_path / "s")],
            "--rdrop applies to --loss sbert", "--loss cosent")
    refused(capsys, [*task_command("ner", files, 1, True, "--head", "crf", "--rdrop", "1"), "--out", str(tmp_path / "n")],
            "--rdrop applies to the GlobalPointer heads")
    refused(capsys, [*task_command("classify", files, 1, True, "--lr-multiplier", "nothing_here=2"),
                     "--out", str(tmp_path / "c")], "--lr-multiplier", "'nothing_here' matches no trainable parameter")


def test_help_shows_every_default(capsys):
    assert cli(["classify", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ["--adv-steps K PGD: projected steps (default: 3)", "(default: 0.3)", "(default: 10)",
                  "--rdrop ALPHA", "(0 = off) (default: 0.0)", "--layer-lr-decay RATE", "--recompute"]:
        assert words in text, words


def expected_multiplier(name: str, layers: int, rate: float, out: float) -> float:
    """Classifier(encoder=roformer with ``layers`` blocks, out=Linear): the rule by name."""
    if name.startswith("out."):
        return out
    if name.startswith("encoder.embeddings."):
        return rate ** layers
    m = re.match(r"encoder\.layers\.(\d+)\.", name)
    return rate ** (layers - int(m.group(1)) - 1) if m else 1.0


def test_classify_tricks_take_effect(files, tmp_path, monkeypatch):
    """FGM perturbs the table and restores it bit for bit after every step; R-Drop runs two passes; the optimizer
    holds the layer-wise rates; every block is checkpointed; the losses differ from the plain run."""
    plain = tmp_path / "plain"
    assert cli([*task_command("classify", files, 1, True), "--out", str(plain)]) == 0
    seen = {"steps": 0, "perturbed": 0, "forwards": 0, "checkpoints": 0, "optimizer": None}

    real_step = FGM.step

    def fgm_step(self, model, loss_fn, batch, **kw):
        table = model.encoder.embeddings.token
        before = table.weight.detach().clone()
        hook = table.register_forward_hook(lambda m, i, o: seen.__setitem__(
            "perturbed", seen["perturbed"] + (not torch.equal(m.weight, before))))
        fwd = model.register_forward_hook(lambda m, i, o: seen.__setitem__("forwards", seen["forwards"] + 1))
        try:
            out = real_step(self, model, loss_fn, batch, **kw)
        finally:
            hook.remove()
            fwd.remove()
        assert torch.equal(table.weight, before)  # restored exactly, before the optimizer moves it
        seen["steps"] += 1
        return out

    real_checkpoint, real_preset, real_parameters = base.checkpoint, common.adamw_preset, tricks.parameters

    def counted(*a, **kw):
        seen["checkpoints"] += 1
        return real_checkpoint(*a, **kw)

    def preset(params, *a, **kw):
        made = real_preset(params, *a, **kw)
        seen["optimizer"] = made.optimizer
        return made

    def parameters(args, module, lr):
        seen["module"] = module
        return real_parameters(args, module, lr)

    monkeypatch.setattr(FGM, "step", fgm_step)
    monkeypatch.setattr(base, "checkpoint", counted)
    monkeypatch.setattr(common, "adamw_preset", preset)
    monkeypatch.setattr(tricks, "parameters", parameters)
    out = tmp_path / "tricks"
    argv = task_command("classify", files, 1, True, "--adversarial", "fgm", "--rdrop", "1", "--layer-lr-decay", "0.8",
                        "--lr-multiplier", "out=5", "--recompute")
    assert cli([*argv, "--out", str(out)]) == 0
    steps = read(out / "train" / "settings.json")["steps"]
    assert seen["steps"] == steps == 2
    # per step: a clean probe pass, then the perturbed pass, each R-Drop's two forwards
    assert seen["forwards"] == 4 * steps and seen["perturbed"] == 2 * steps
    assert seen["checkpoints"] == 4 * steps * 2  # 2 blocks per forward
    lrs = {id(p): g["initial_lr"] for g in seen["optimizer"].param_groups for p in g["params"]}
    settings = read(out / "train" / "settings.json")
    assert settings["adversarial"] == {"method": "fgm", "epsilon": 1.0, "include_clean": False}
    assert settings["rdrop"] == 1.0 and settings["layer_lr_decay"] == 0.8 and settings["lr_multipliers"] == [["out", 5.0]]
    assert sorted(g["lr_multiplier"] for g in settings["optimizer_preset"]["param_groups"]) == \
        pytest.approx(sorted({0.8 ** 2, 0.8, 1.0, 5.0}))
    named = list(seen["module"].named_parameters())
    assert len(lrs) == len(named) and any(n.startswith("encoder.layers.1.") for n, _ in named)
    for name, p in named:
        assert lrs[id(p)] == pytest.approx(settings["lr"] * expected_multiplier(name, 2, 0.8, 5.0)), name
    metrics = read(out / "metrics.json")
    assert metrics["training_tricks"] == {"adversarial": settings["adversarial"], "layer_lr_decay": 0.8,
                                          "lr_multipliers": [["out", 5.0]], "rdrop": 1.0, "recompute": True}
    assert "training tricks: adversarial:" in (out / "README.md").read_text(encoding="utf-8")
    assert metrics["loss"] != read(plain / "metrics.json")["loss"]


def same_but_recompute(a, b) -> bool:
    """``results`` of two runs equal except metrics' record of --recompute itself."""
    ra, rb = results(a), results(b)
    for r in (ra, rb):
        r["metrics.json"]["training_tricks"].pop("recompute")
    return ra == rb


def test_recompute_changes_nothing_but_memory(files, tmp_path):
    """The same run with --recompute saves the same model, bit for bit (plain and under the gradient penalty's
    double backward)."""
    for extra in ([], ["--adversarial", "gp"]):
        a, b = tmp_path / f"a{len(extra)}", tmp_path / f"b{len(extra)}"
        assert cli([*task_command("classify", files, 1, True, *extra), "--out", str(a)]) == 0
        assert cli([*task_command("classify", files, 1, True, *extra, "--recompute"), "--out", str(b)]) == 0
        assert same_but_recompute(a, b)


def test_changed_tricks_refused_on_resume_recompute_allowed(files, tmp_path, monkeypatch, capsys):
    import kexue.train.loop as loop

    argv = task_command("classify", files, 2, True, "--checkpoint-every", "1", "--adversarial", "fgm", "--rdrop", "1",
                        "--layer-lr-decay", "0.8", "--lr-multiplier", "out=5")
    cut, straight = tmp_path / "cut", tmp_path / "straight"
    real, saves = loop.save_state, []

    def interrupted(state, path):
        real(state, path)
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_state", interrupted)
    assert cli([*argv, "--out", str(cut)]) == 130
    monkeypatch.undo()
    def value(option, new):  # argv with option's value replaced (None: the option left out)
        i = argv.index(option)
        return [*argv[:i], *([option, new] if new is not None else []), *argv[i + 2:]]

    for changed, words in [
        (value("--rdrop", "2"), ["rdrop: 1.0 -> 2.0"]),
        (value("--rdrop", None), ['rdrop: 1.0 -> "(absent)"']),
        (value("--adversarial", None), ['adversarial: {"method": "fgm"', '-> "(absent)"']),
        (value("--adversarial", "pgd"), ['adversarial.method: "fgm" -> "pgd"', 'adversarial.steps']),
        (value("--layer-lr-decay", "0.9"), ["layer_lr_decay: 0.8 -> 0.9"]),
        ([*argv, "--lr-multiplier", "encoder=2"], ["lr_multipliers"]),
        ([*argv, "--adv-include-clean"], ["adversarial"]),
    ]:
        refused(capsys, [*changed, "--out", str(cut)], *words, "--resume", "--overwrite")
    # --recompute is not a setting: the run continues with it and ends as the uninterrupted run without it
    assert cli([*argv, "--recompute", "--out", str(cut)]) == 0
    assert cli([*argv, "--out", str(straight)]) == 0
    assert same_but_recompute(cut, straight)


def test_similarity_sbert_rdrop_and_layer_rates(files, tmp_path):
    plain, tricked = tmp_path / "plain", tmp_path / "tricked"
    assert cli([*task_command("similarity", files, 1, True, "--loss", "sbert"), "--out", str(plain)]) == 0
    assert cli([*task_command("similarity", files, 1, True, "--loss", "sbert", "--rdrop", "1", "--layer-lr-decay",
                              "0.5", "--lr-multiplier", "head=3", "--adversarial", "fgm", "--recompute"),
                "--out", str(tricked)]) == 0
    settings = read(tricked / "train" / "settings.json")
    assert sorted(g["lr_multiplier"] for g in settings["optimizer_preset"]["param_groups"]) == \
        pytest.approx([0.25, 0.5, 1.0, 3.0])
    assert settings["rdrop"] == 1.0 and settings["adversarial"]["method"] == "fgm"
    assert read(tricked / "metrics.json")["training_tricks"]["rdrop"] == 1.0
    assert results(plain) != results(tricked)


def test_pretrain_recompute_same_model(files, tmp_path, monkeypatch):
    """``kexue pretrain --recompute`` checkpoints its blocks and saves the same model bit for bit."""
    from recipes_common import other_command

    calls = []
    real = base.checkpoint
    monkeypatch.setattr(base, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    argv = other_command("pretrain", files)
    assert cli([*argv, "--out", str(tmp_path / "a")]) == 0 and not calls
    assert cli([*argv, "--out", str(tmp_path / "b"), "--recompute"]) == 0 and len(calls) == 6  # 6 steps x 1 block
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
