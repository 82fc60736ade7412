"""A model folder is one unit: written atomically, checked on load.

Fault matrix: a real ``save_task_model`` (the path every task recipe takes) runs in a forked child of a
subprocess whose hooks SIGKILL it after its k-th file / rename, for every k, saving into a fresh ``--out``
(empty, as ``setup`` leaves it, or absent), over an older model (renameat2 exchange) and over it with the
rename-aside fallback; and in this process with a disk that fills after k files (ENOSPC). After each,
``kexue.load`` gives exactly the old or the new model's predictions, or a one-line error naming what is
missing — never a mix — and the next save leaves no temporary file or folder. Tamper tests: each corruption
of the issue, in a folder with a manifest (resealed, so the cross-checks themselves are hit) and in a
folder written the way kexue wrote them before manifests, is one line naming the file and field.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kexue
import kexue.io as kio
from kexue.cli import main as cli
from kexue.io import FolderError, MANIFEST, save_safetensors, write_json
from kexue.models.checkpoints import save_pretrained
from kexue.recipes.folder import head_state, save_task_model

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["床前明月光，疑是地上霜。", "大江东去，浪淘尽，千古风流人物。", "春眠不觉晓", "明月几时有，把酒问青天。"]
MODES = ("fresh", "fresh-absent", "overwrite", "overwrite-fallback")

SCRIPT = r'''
import json, os, signal, sys, traceback
from pathlib import Path
os.environ["TOKENIZERS_PARALLELISM"] = "false"
import torch
torch.set_num_threads(1)
import kexue
import kexue.io as kio
from kexue.recipes.folder import head_state, save_task_model

old_ref, new_ref, work = map(Path, sys.argv[1:4])
modes = sys.argv[4].split(",")
p = kexue.load(new_ref)
settings = json.loads((new_ref / "task.json").read_text(encoding="utf-8"))["settings"]
metrics = json.loads((new_ref / "metrics.json").read_text(encoding="utf-8"))
preds = [json.loads(l) for l in (new_ref / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def name(path):
    def one(n):
        return "<new>" if ".kexue-new-" in n else "<old>" if ".kexue-old-" in n else n
    path = Path(path)
    return f"{one(path.parent.name)}/train" if path.name == "train" else one(path.name)


def child(mode, target, kill_at, log):
    """Save with every file / rename / exchange / removal of the old folder counted; SIGKILL after kill_at."""
    events = []

    def hook(kind, fn):
        def wrapped(*a, **k):
            r = fn(*a, **k)
            if kind == "exchange" and r is False:
                return r
            events.append(f"wrote {name(a[1])}" if kind == "file" else f"renamed {name(a[0])} -> {name(a[1])}"
                          if kind == "rename" else "exchanged <new> <-> model" if kind == "exchange"
                          else f"removed {name(a[0])}")
            if len(events) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return r
        return wrapped

    if mode == "overwrite-fallback":
        kio._exchange = lambda a, b: False
    os.replace = hook("file", os.replace)  # the last step of every atomic file write
    os.rename = hook("rename", os.rename)
    kio._exchange = hook("exchange", kio._exchange)
    kio._remove = hook("remove", kio._remove)
    save_task_model(target, "classify", p.classifier.encoder, p.tokenizer, head_state(p.classifier, "encoder"),
                    p.labels, settings, metrics, [1.0, 0.5], {"command": "kexue classify"}, predictions=preds,
                    overwrite=mode.startswith("overwrite"))
    if log:
        log.write_text(json.dumps(events), encoding="utf-8")


def prepare(target, mode):
    target.parent.mkdir(parents=True)
    if mode.startswith("overwrite"):  # an older model with a run folder (carried into the new one)
        import shutil
        shutil.copytree(old_ref, target)
    elif mode == "fresh":
        target.mkdir()  # what `setup` leaves for a fresh --out


def run(mode, target, kill_at, log=None):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child(mode, target, kill_at, log)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed" if os.WTERMSIG(status) == signal.SIGKILL else f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


records = []
for mode in modes:
    dry = work / mode / "dry" / "model"
    prepare(dry, mode)
    assert run(mode, dry, None, work / mode / "events.json") == "exit 0", mode
    events = json.loads((work / mode / "events.json").read_text(encoding="utf-8"))
    for k, event in enumerate(events, 1):
        target = work / mode / f"k{k:02d}" / "model"
        prepare(target, mode)
        records.append({"mode": mode, "k": k, "event": event, "status": run(mode, target, k),
                        "target": str(target)})
print(json.dumps(records))
'''


def train(tmp_path_factory, name, *args):
    out = tmp_path_factory.mktemp(name) / "model"
    assert cli(["classify", "--out", str(out), "--no-progress", "--epochs", "1", "--limit", "8", "--maxlen", "32",
                *args]) == 0
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny classifiers on the fortunes-zh poems (seeds 0 and 1) and their predictions on TEXTS."""
    torch.set_num_threads(1)
    old, new = train(tmp_path_factory, "old"), train(tmp_path_factory, "new", "--seed", "1")
    expected = {"old": kexue.load(old).predict(TEXTS), "new": kexue.load(new).predict(TEXTS)}
    assert expected["old"] != expected["new"]
    return old, new, expected


def outcome(target, expected) -> str:
    """What kexue.load makes of ``target``: "old", "new", or "error: <the one line>"; a mix fails the test."""
    try:
        got = kexue.load(target).predict(TEXTS)
    except (ValueError, OSError) as e:
        assert "\n" not in str(e), str(e)
        return f"error: {e}"
    for which in ("old", "new"):
        if got == expected[which]:
            return which
    raise AssertionError(f"{target}: a MIXED model: {got}")


def new_save(model, target, overwrite):
    save_task_model(target, "classify", model.classifier.encoder, model.tokenizer, head_state(model.classifier, "encoder"),
                    model.labels, {"maxlen": 32, "pair": False}, {"accuracy": 1.0}, [1.0], {}, predictions=[],
                    overwrite=overwrite)


def no_leftovers(target):
    left = [p.name for p in target.parent.iterdir() if p.name != target.name]
    inside = [p.name for p in target.rglob("*") if p.name.startswith(".")]
    assert not left and not inside, (left, inside)


def test_fault_matrix_kill_and_full_disk(models, tmp_path, monkeypatch, capsys):
    if not hasattr(os, "fork"):
        pytest.skip("the kill matrix forks")
    old, new, expected = models
    older = tmp_path / "old-with-run" / "model"  # the old model saved with a run folder beside it, as
    shutil.copytree(old, older)  # every recipe's folder holds its run folder train/ (a marker for its state here)
    (older / "train").mkdir(exist_ok=True)
    (older / "train" / "state.safetensors").write_bytes(b"run state")
    new_save(kexue.load(old), older, overwrite=True)
    assert json.loads((older / MANIFEST).read_text(encoding="utf-8"))["other"] == ["train"]
    assert kexue.load(older).predict(TEXTS) == expected["old"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(older), str(new), str(tmp_path / "kill"), ",".join(MODES)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    records = json.loads(r.stdout.strip().splitlines()[-1])
    newer = kexue.load(new)
    rows = []
    for mode in MODES:
        mine = [rec for rec in records if rec["mode"] == mode]
        assert len(mine) >= 12 and all(rec["status"] == "killed" for rec in mine), mine
        seen = []
        for rec in mine:
            target = Path(rec["target"])
            got = outcome(target, expected)
            kind = got.split(":")[0]
            if mode.startswith("overwrite"):
                assert kind in ("old", "new"), (rec, got)
                assert (target / "train" / "state.safetensors").read_bytes() == b"run state"  # the run folder stays
            else:  # nothing was there: the error names the folder or the config.json that is missing
                assert kind == "new" or ("no such model folder" in got or "no config.json" in got), (rec, got)
            seen.append(kind)
            # the next save (a fresh one is not refused unless the killed one had finished) leaves no leftover
            new_save(newer, target, overwrite=mode.startswith("overwrite") or kind == "new")
            assert kexue.load(target).predict(TEXTS) == expected["new"]
            no_leftovers(target)
            if mode.startswith("overwrite"):
                assert (target / "train" / "state.safetensors").read_bytes() == b"run state"
            rows.append((mode, rec["k"], rec["event"], got.replace(str(target.parent), "…") if kind == "error" else kind))
        flip = seen.index("new")  # old (or nothing) until one rename, new from then on: never back
        assert all(k != "new" for k in seen[:flip]) and all(k == "new" for k in seen[flip:]), seen

    # a disk that fills after k files: the k+1-th file (or the manifest) fails with ENOSPC
    for mode in ("fresh", "overwrite"):
        k = 0
        while True:
            target = tmp_path / "enospc" / f"{mode}-{k:02d}" / "model"
            target.parent.mkdir(parents=True)
            if mode == "overwrite":
                shutil.copytree(older, target)
            count = [0]
            real = os.replace

            def full_disk(a, b, count=count, k=k, real=real):
                if count[0] == k:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(b))
                count[0] += 1
                return real(a, b)

            monkeypatch.setattr(os, "replace", full_disk)
            try:
                new_save(newer, target, overwrite=mode == "overwrite")
                finished = True
            except OSError as e:
                assert e.errno == errno.ENOSPC
                finished = False
            finally:
                monkeypatch.setattr(os, "replace", real)
            if finished:  # k is past the last file: the save went through
                assert outcome(target, expected) == "new"
                break
            got = outcome(target, expected)
            assert got == "old" if mode == "overwrite" else "no such model folder" in got, got
            assert not [p for p in target.parent.iterdir() if p.name != "model"]  # cleaned at once
            if target.exists():
                no_leftovers(target)
            rows.append((f"enospc-{mode}", k + 1, f"disk full at file {k + 1}",
                         got.replace(str(target.parent), "…") if mode == "fresh" else got))
            k += 1
        assert k >= 10

    with capsys.disabled():
        print(f"\nfault matrix ({len(rows)} points; outcome = kexue.load right after the fault; every next save clean)")
        for mode, k, event, got in rows:
            print(f"  {mode:<19} {k:>2}  {event:<42} -> {got[:90]}")


# --- tamper tests -----------------------------------------------------------------------------------------

def old_save_task_model(out, task, backbone, tokenizer, head, labels, settings, metrics):
    """``save_task_model`` as kexue wrote folders before manifests: file by file, task and labels in both
    config.json's kexue block and task.json."""
    save_pretrained(backbone, out, tokenizer)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config["kexue"] = {**(config.get("kexue") or {}), "task": task, "labels": labels}
    write_json(out / "config.json", config)
    if head:
        save_safetensors(head, out / "head.safetensors")
    write_json(out / "task.json", {"task": task, "labels": labels, "settings": settings})
    write_json(out / "metrics.json", metrics)


@pytest.fixture(scope="module")
def old_format(models, tmp_path_factory):
    old, _, expected = models
    p = kexue.load(old)
    folder = tmp_path_factory.mktemp("old-format") / "model"
    old_save_task_model(folder, "classify", p.classifier.encoder, p.tokenizer, head_state(p.classifier, "encoder"),
                        p.labels, {"maxlen": 32, "pair": False}, {"accuracy": 1.0})
    return folder


def reseal(d):
    """Rewrite the manifest's sizes and hashes for the files as they are now (a consistent but wrong folder)."""
    m = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
    m["files"] = {rel: dict(zip(("size", "sha256"), kio._digest(d / rel))) for rel in m["files"] if (d / rel).exists()}
    (d / MANIFEST).write_text(json.dumps(m, ensure_ascii=False), encoding="utf-8")


def edit_json(path, change):
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def drop_last_vocab_row(path):
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")


def duplicate_vocab_row(path):
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[20] = lines[10]  # same row count, every id after line 21 would read a different token
    path.write_text("".join(lines), encoding="utf-8")


def copy_from_new(name):
    def f(d, new):
        shutil.copy(new / name, d / name)
    return f


NEW_FORMAT = [  # (corruption, reseal the manifest afterwards, words of the one-line error)
    ("truncated model.safetensors", lambda d, n: truncate(d / "model.safetensors"), False,
     ["model.safetensors:", "bytes, but manifest.json records"]),
    ("truncated head.safetensors", lambda d, n: truncate(d / "head.safetensors"), False, ["head.safetensors:"]),
    ("new weights, old config (a mix)", copy_from_new("model.safetensors"), False, ["model.safetensors:", "manifest.json records"]),
    ("new head, old encoder (a mix)", copy_from_new("head.safetensors"), False, ["head.safetensors: its sha256 differs"]),
    ("file missing", lambda d, n: (d / "task.json").unlink(), False, ["task.json: missing (listed in manifest.json)"]),
    ("file added", lambda d, n: (d / "pytorch_model.bin").write_bytes(b"x"), False, ["pytorch_model.bin: not listed"]),
    ("truncated model.safetensors, resealed", lambda d, n: truncate(d / "model.safetensors"), True,
     ["model.safetensors: truncated"]),
    ("truncated head.safetensors, resealed", lambda d, n: truncate(d / "head.safetensors", 0.9), True,
     ["head.safetensors: truncated"]),
    ("invalid JSON in task.json", lambda d, n: (d / "task.json").write_text('{"settings": }'), True,
     ["task.json: invalid JSON (Expecting value at line 1 column 14)"]),
    ("invalid JSON in config.json", lambda d, n: (d / "config.json").write_text("{\n  vocab_size: 3}"), True,
     ["config.json: invalid JSON", "line 2 column 3"]),
    ("vocab.txt one row short", lambda d, n: drop_last_vocab_row(d / "vocab.txt"), True,
     ["vocab.txt:", "tokens, but the token embedding in model.safetensors has"]),
    ("vocab.txt duplicated line", lambda d, n: duplicate_vocab_row(d / "vocab.txt"), True,
     ["vocab.txt: token", "on lines 11 and 21"]),
    ("settings.pair missing (was KeyError 'pair')",
     lambda d, n: edit_json(d / "task.json", lambda t: t["settings"].pop("pair")), True,
     ["task.json: field 'settings.pair' is missing"]),
    ("settings.maxlen a string (was a TypeError)",
     lambda d, n: edit_json(d / "task.json", lambda t: t["settings"].update(maxlen="32")), True,
     ["task.json: field 'settings.maxlen' must be an integer, got \"32\""]),
    ("manifest labels: one more than the head", lambda d, n: edit_json(d / MANIFEST, lambda m: m["labels"].append("元")),
     False, ["head.safetensors: out.weight has 2 output rows, but manifest.json's field 'labels' (3 labels) needs 3"]),
    ("manifest labels not a list", lambda d, n: edit_json(d / MANIFEST, lambda m: m.update(labels="唐")), False,
     ["manifest.json: field 'labels' must be a list of strings or null"]),
    ("manifest task unknown", lambda d, n: edit_json(d / MANIFEST, lambda m: m.update(task="classfy")), False,
     ["manifest.json: unknown task 'classfy'"]),
    ("kexue block typed", lambda d, n: edit_json(d / "config.json", lambda c: c["kexue"].update(family=3)), True,
     ["config.json: field 'kexue.family' must be a string or null, got 3"]),
]

OLD_FORMAT = [  # folders without manifest: the cross-checks alone
    ("config.json without its task block", lambda d: edit_json(d / "config.json", lambda c: c["kexue"].pop("task")),
     ["config.json: field 'kexue.task' is None but", "task.json says 'classify'"]),
    ("task.json labels disagree with config.json",
     lambda d: edit_json(d / "task.json", lambda t: t.update(labels=t["labels"][::-1])),
     ["config.json: field 'kexue.labels'", "disagrees with", "task.json"]),
    ("labels: one more than the head", lambda d: (edit_json(d / "task.json", lambda t: t["labels"].append("元")),
                                                  edit_json(d / "config.json", lambda c: c["kexue"]["labels"].append("元"))),
     ["head.safetensors: out.weight has 2 output rows, but task.json's field 'labels' (3 labels) needs 3"]),
    ("truncated model.safetensors", lambda d: truncate(d / "model.safetensors"), ["model.safetensors: truncated"]),
    ("truncated head.safetensors", lambda d: truncate(d / "head.safetensors", 0.99), ["head.safetensors: truncated"]),
    ("invalid JSON in task.json", lambda d: (d / "task.json").write_text("{"), ["task.json: invalid JSON"]),
    ("invalid JSON in config.json", lambda d: (d / "config.json").write_text(""), ["config.json: invalid JSON"]),
    ("vocab.txt one row short", lambda d: drop_last_vocab_row(d / "vocab.txt"), ["vocab.txt:", "has"]),
    ("vocab.txt duplicated line", lambda d: duplicate_vocab_row(d / "vocab.txt"), ["vocab.txt: token", "lines 11 and 21"]),
    ("settings.pair missing", lambda d: edit_json(d / "task.json", lambda t: t["settings"].pop("pair")),
     ["task.json: field 'settings.pair' is missing"]),
    ("labels a string", lambda d: edit_json(d / "task.json", lambda t: t.update(labels="唐宋")),
     ["task.json: field 'labels' must be a list of strings or null"]),
    ("head missing", lambda d: (d / "head.safetensors").unlink(), ["head.safetensors: missing"]),
]


@pytest.mark.parametrize("what, tamper, resealed, words", NEW_FORMAT, ids=[c[0] for c in NEW_FORMAT])
def test_tampered_folder_is_one_line_naming_the_file(models, tmp_path, what, tamper, resealed, words):
    old, new, expected = models
    d = tmp_path / "model"
    shutil.copytree(old, d)
    tamper(d, new)
    if resealed:
        reseal(d)
    with pytest.raises((FolderError, ValueError)) as e:
        kexue.load(d)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.parametrize("what, tamper, words", OLD_FORMAT, ids=[c[0] for c in OLD_FORMAT])
def test_tampered_old_format_folder_is_refused_by_its_cross_checks(old_format, tmp_path, what, tamper, words):
    d = tmp_path / "model"
    shutil.copytree(old_format, d)
    tamper(d)
    with pytest.raises((FolderError, ValueError)) as e:
        kexue.load(d)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_old_format_folder_loads_and_an_overwrite_replaces_it_whole(models, old_format, tmp_path, capsys):
    old, new, expected = models
    assert not (old_format / MANIFEST).exists()
    assert kexue.load(old_format).predict(TEXTS) == expected["old"]  # same model, written the old way
    d = tmp_path / "model"
    shutil.copytree(old_format, d)
    (d / "notes.txt").write_text("the user's own file")
    (d / ".config.json.k1ll3d00.tmp").write_text("what a killed write of an older kexue left")
    new_save(kexue.load(new), d, overwrite=True)
    assert sorted(p.name for p in d.iterdir() if p.suffix in (".txt", ".tmp")) == ["notes.txt", "vocab.txt"]
    assert json.loads((d / MANIFEST).read_text(encoding="utf-8"))["other"] == ["notes.txt"]
    assert kexue.load(d).predict(TEXTS) == expected["new"]
    # the command line: the same one line, exit status 2
    truncate(d / "head.safetensors")
    capsys.readouterr()
    assert cli(["predict", str(d), TEXTS[0]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "head.safetensors" in err and err.startswith("kexue: error: ")


def test_recipe_out_holding_a_half_written_old_folder_says_so(old_format, tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(old_format, d)
    (d / "head.safetensors").unlink()
    capsys.readouterr()
    assert cli(["classify", "--out", str(d), "--limit", "8", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "incomplete or damaged model folder" in err and "head.safetensors" in err and "--overwrite" in err


def test_diffusion_and_gan_folders_are_not_read_as_encoders(tmp_path):
    from kexue.diffusion import methods
    from kexue.diffusion.folder import load_model, save_model
    from kexue.generative.gan import build_gan
    from kexue.generative.gan_train import load_gan, save_gan

    save_model(methods.build("eps", 1, 8), tmp_path / "diff", kind="eps", channels=1, width=8)
    with pytest.raises(FolderError, match="is a diffusion model folder, written by `kexue diffusion`"):
        kexue.load(tmp_path / "diff")
    (tmp_path / "diff" / "manifest.json").unlink()  # as kexue diffusion wrote it before manifests
    with pytest.raises(FolderError, match="is a diffusion model folder"):
        kexue.load(tmp_path / "diff")
    assert load_model(tmp_path / "diff")[1]["kind"] == "eps"
    torch.manual_seed(0)
    gan = build_gan(8, 1, 8, 8, selfmod=True)
    save_gan(gan, tmp_path / "gan", loss="hinge", steps=0)
    with pytest.raises(FolderError, match="is a gan model folder, written by `kexue gan`"):
        kexue.load(tmp_path / "gan")
    back, config = load_gan(tmp_path / "gan")
    z = torch.randn(4, 8)
    assert torch.equal(back.sample(4, z=z), gan.sample(4, z=z)) and config["selfmod"] is True


def test_encoder_folder_records_its_whitening_as_post_processing(tmp_path):
    """save_encoder (the demo's encoders) stores a Whitening as the folder's post-processing; kexue.load embeds
    like the in-memory model, Whitening.from_folder transforms like the in-memory whitening, and a manifest
    whose (β, γ, k) disagree with the file is refused by field."""
    from kexue.data import shipped as datasets
    from kexue.models import build_model
    from kexue.models.pretrained import embed
    from kexue.recipes.folder import save_encoder
    from kexue.similarity.whitening import Whitening
    from kexue.text.tokenizer import Tokenizer, build_vocab

    texts = [p.a for p in datasets.sts_zh("test")[:40]]
    tok = Tokenizer(build_vocab(texts))
    model = build_model(dict(model_type="roformer", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).eval()
    vectors = embed(model, tok, texts, maxlen=48)
    w = Whitening.fit(vectors).with_params(0.0, 0.0, 16)
    save_encoder(tmp_path / "enc", model, tok, maxlen=48, whitening=w)
    m = json.loads((tmp_path / "enc" / MANIFEST).read_text(encoding="utf-8"))
    assert (m["kind"], m["task"], m["pooling"]) == ("encoder", None, "mean")
    assert m["post_processing"] == {"normalize": {}, "whitening": {"file": "whitening.safetensors", "beta": 0.0,
                                                                   "gamma": 0.0, "k": 16, "dim": 32}}
    got = torch.tensor([r["embedding"] for r in kexue.load(tmp_path / "enc").predict(texts[:5])])
    assert torch.allclose(got, w.transform(vectors[:5]), atol=1e-6)  # the folder's post-processing is applied
    assert torch.equal(kexue.load(tmp_path / "enc").embed(texts[:5], post_processing=False), vectors[:5])
    back = Whitening.from_folder(tmp_path / "enc")
    assert torch.equal(back.transform(vectors), w.transform(vectors))
    edit_json(tmp_path / "enc" / MANIFEST, lambda m: m["post_processing"]["whitening"].update(k=8))
    for load in (kexue.load, Whitening.from_folder):
        with pytest.raises(FolderError, match="field 'post_processing.whitening.k' is 8 but whitening.safetensors holds 16"):
            load(tmp_path / "enc")
