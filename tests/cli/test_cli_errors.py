"""The command line speaks clearly: each class of bad input gives one line on stderr
(``kexue: error: …``), exit status 2, no traceback, and leaves what is already in ``--out`` untouched."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kexue.cli import main as cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def out(tmp_path):
    """An output folder that already holds files a failed command must not touch."""
    d = tmp_path / "out"
    d.mkdir()
    (d / "keep.txt").write_text("precious", encoding="utf-8")
    return d


def snapshot(d: Path, files_only: bool = False) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if not (files_only and p.is_dir())}


def fails(capsys, argv, *words, out=None):
    """Run ``kexue argv``: exit 2, one stderr line naming ``words``, no traceback, ``out`` unchanged."""
    before = snapshot(out) if out else None
    capsys.readouterr()
    assert cli(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kexue: error: ") and "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]
    if out:
        assert snapshot(out) == before
    return lines[0]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


# -- numbers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["ner", "--epochs", "-1"], ["--epochs", "positive integer"]),
    (["classify", "--batch-size", "0"], ["--batch-size", "positive integer"]),
    (["poem", "--lr", "nan"], ["--lr", "finite"]),
    (["dialogue", "--lr", "inf"], ["--lr", "finite"]),
    (["reading", "--limit", "-1"], ["--limit"]),
    (["ner", "--rdrop", "-0.5"], ["--rdrop", "≥ 0"]),
    (["ner", "--epochs", "two"], ["--epochs", "integer"]),
    (["poem", "--top-k", "0"], ["--top-k"]),
    (["evaluate", "--limit", "0"], ["--limit"]),
])
def test_bad_numbers(capsys, out, argv, words):
    fails(capsys, argv + ["--out", str(out)] if argv[0] != "evaluate" else argv, *words, out=out)


def test_bad_numbers_of_predict_and_serve(capsys, tmp_path):
    from kexue.models.pretrained import minilm_path

    fails(capsys, ["predict", str(minilm_path()), "x", "--top-p", "1.5"], "--top-p", "(0, 1]")
    fails(capsys, ["predict", str(minilm_path()), "x", "--temperature", "0"], "--temperature")
    fails(capsys, ["serve", str(minilm_path()), "--port", "70000"], "--port")
    fails(capsys, ["serve", str(minilm_path()), "--max-batch", "0"], "--max-batch")


# -- input files -----------------------------------------------------------------------------------
def test_missing_input_file(capsys, out, tmp_path):
    fails(capsys, ["classify", "--train", str(tmp_path / "nope.tsv"), "--out", str(out)], "no such file", out=out)


@pytest.mark.parametrize("recipe, name, text, where, what", [
    ("classify", "a.tsv", "好极了\tpos\n糟透了\n", ":2:", "column"),
    ("classify", "b.tsv", "好\tpos\n坏\t\n", ":2:", "empty label"),
    ("classify", "c.tsv", "甲\t乙\t1\n丙\t1\n", ":2:", "first line has 3"),
    ("ner", "a.bio", "中 B-LOC\n国 I-LOC\n\n人 X-PER\n", ":4:", "bad tag"),
    ("ner", "b.bio", "中国 B-LOC\n", ":1:", "one character"),
    ("ner", "c.bio", "中\n", ":1:", "char TAG"),
    ("ner", "d.bioes", "中 B-LOC\n国 E-LOC\n\n人 B-PER\n民 O\n", ":5:", "bad transition 'B-PER' -> 'O'"),
    ("ner", "e.bio", "中 O\n国 I-LOC\n", ":2:", "bad transition 'O' -> 'I-LOC'"),
    ("reading", "a.json", '[\n{"question": "q",\n "passages": [}\n]', ":3:", "invalid JSON"),
    ("reading", "b.json", '[{"question": "谁", "passages": [{"passage": "x", "answer": "y"}]},\n'
                          ' {"question": "哪里", "passages": []}]', ":2:", "no passages"),
    ("poem", "a.txt", "唐\t床前明月光\n疑是地上霜\n", ":2:", "class"),
    ("dialogue", "a.txt", "你好\n你好啊\n\n孤单一句\n", ":4:", "at least 2 turns"),
])
def test_malformed_data_names_file_and_line(capsys, out, tmp_path, recipe, name, text, where, what):
    path = write(tmp_path, name, text)
    line = fails(capsys, [recipe, "--train", path, "--out", str(out)], what, out=out)
    assert path + where in line


def test_not_utf8(capsys, out, tmp_path):
    p = tmp_path / "gbk.tsv"
    p.write_bytes("好\tpos\n".encode() + "坏\tneg\n".encode("gbk"))
    fails(capsys, ["classify", "--train", str(p), "--out", str(out)], f"{p}:2:", "UTF-8", out=out)


def test_single_label(capsys, out, tmp_path):
    fails(capsys, ["classify", "--train", write(tmp_path, "one.tsv", "好\tpos\n妙\tpos\n"), "--out", str(out)],
          "only one label", out=out)


# -- data too small to learn from: refused before training, naming the file and the minimum ----------
@pytest.mark.parametrize("argv, files, words", [
    (["classify", "--train", "{d}/a.tsv"], {"a.tsv": "好\tpos\n坏\tneg\n"},
     ["a.tsv: 0 labels; at least 2 needed", "hold-out", "--dev"]),
    (["poem", "--train", "{d}/a.txt"], {"a.txt": "唐\t床前明月光\n"},
     ["a.txt: 0 training poems; at least 1 needed", "--dev"]),
    (["dialogue", "--train", "{d}/a.txt"], {"a.txt": "你好\n你好啊\n"},
     ["a.txt: 0 training dialogues; at least 1 needed", "--dev"]),
    (["similarity", "--train", "{d}/a.tsv"], {"a.tsv": "甲\t乙\t1\n丙\t丁\t1\n"},
     ["a.tsv: 1 distinct label; at least 2 needed (CoSENT"]),
    (["similarity", "--train", "{d}/a.tsv", "--loss", "sbert"], {"a.tsv": "甲\t乙\t0\n丙\t丁\t0\n"},
     ["a.tsv: 1 distinct label; at least 2 needed (SBERT"]),
    (["similarity", "--train", "{d}/a.tsv", "--dev", "{d}/b.tsv"], {"a.tsv": "甲\t乙\t1\n丙\t丁\t0\n",
                                                                    "b.tsv": "甲\t乙\t1\n"},
     ["b.tsv: 1 pair; at least 2 needed (Spearman"]),
    (["pretrain", "--data", "{d}/corpus"], {"corpus/a.txt": "\n  \n", "corpus/b.txt": "\n"},
     ["corpus: no text (its 2 *.txt files hold only blank lines)"]),
    (["pretrain", "--data", "{d}/corpus", "--maxlen", "1"], {"corpus/a.txt": "北京欢迎你\n"},
     ["--maxlen 1: mlm needs at least 3"]),
    (["pretrain", "--data", "{d}/corpus", "--maxlen", "4", "--objective", "unilm"], {"corpus/a.txt": "北京欢迎你\n"},
     ["--maxlen 4: unilm needs at least 5"]),
    (["zh-mini", "--steps", "0"], {}, ["--steps", "positive integer"]),
    (["diffusion", "--channels", "2"], {}, ["--channels", "invalid choice: 2 (choose from 1, 3)"]),
    (["diffusion", "--channels", "3"], {}, ["--channels 3", "--data digits is grayscale"]),
    (["gan", "--channels", "2"], {}, ["--channels", "invalid choice: 2 (choose from 1, 3)"]),
])
def test_too_small_data_or_settings_that_learn_nothing(capsys, out, tmp_path, argv, files, words):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    fails(capsys, [a.format(d=tmp_path) for a in argv] + ["--out", str(out)], *words, out=out)


def test_pretrain_corpus_with_nothing_to_mask(capsys, tmp_path):
    """Every text's first word is longer than --maxlen 3 leaves room for (1 token): nothing to mask, refused
    before a step is taken, and no model is saved."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("北京欢迎你\n中华人民共和国\n", encoding="utf-8")
    out = tmp_path / "out"
    fails(capsys, ["pretrain", "--data", str(corpus), "--maxlen", "3", "--out", str(out)],
          f"--data {corpus}: no text has a word that fits in --maxlen 3 (1 token besides [CLS] and [SEP]): "
          "nothing could be masked")
    assert not (out / "model.safetensors").exists() and not (out / "manifest.json").exists()


def test_evaluate_and_gan_name_the_file_and_the_minimum(capsys, tmp_path):
    pairs = write(tmp_path, "one.tsv", "甲\t乙\t3\n")
    fails(capsys, ["evaluate", "--pairs", pairs, "--model", "zh-mini"], f"{pairs}: 1 pair; at least 2 needed")
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("L", (8, 8), 128).save(images / "a.png")
    from kexue.data.images import image_folder

    with pytest.raises(ValueError, match="channels must be 1 \\(grayscale\\) or 3 \\(RGB\\), got 2"):
        image_folder(images, 8, 2)
    fails(capsys, ["gan", "--data", str(images), "--out", str(tmp_path / "g")],
          f"{images}: 1 image; at least 64 needed (one full batch of --batch-size 64)")


def test_not_utf8_corpus_names_file_and_line(capsys, out, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes("北京\n上海\n".encode() + "广州\n".encode("gbk"))
    fails(capsys, ["pretrain", "--data", str(corpus), "--out", str(out)], f"{corpus / 'a.txt'}:3: not UTF-8 text",
          out=out)


# -- output folders --------------------------------------------------------------------------------
def test_out_is_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    fails(capsys, ["ner", "--out", str(f)], "not a folder")
    fails(capsys, ["ner", "--out", str(f / "sub")], "not writable")  # a folder that cannot be made
    assert f.read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_out_not_writable(capsys, out):
    out.chmod(0o500)
    try:
        fails(capsys, ["ner", "--out", str(out / "sub")], "not writable")
        fails(capsys, ["ner", "--out", str(out)], "not writable", out=out)
    finally:
        out.chmod(0o700)


def test_out_holding_a_model_needs_overwrite(capsys, out):
    (out / "metrics.json").write_text('{"f1": 0.9}', encoding="utf-8")
    fails(capsys, ["ner", "--out", str(out)], "--overwrite", out=out)


def test_checked_before_training(capsys, out, tmp_path):
    """A bad --dev file fails before any training (nothing is written, no progress of a fit)."""
    good = write(tmp_path, "good.tsv", "好\tpos\n坏\tneg\n")
    fails(capsys, ["classify", "--train", good, "--dev", write(tmp_path, "bad.tsv", "x\n"), "--out", str(out)],
          "bad.tsv:1:", out=out)


# -- models and predictions ------------------------------------------------------------------------
def test_not_a_model_folder(capsys, tmp_path, out):
    fails(capsys, ["predict", str(tmp_path), "x"], "config.json")
    fails(capsys, ["ner", "--checkpoint", str(tmp_path), "--out", str(out)], "--checkpoint", out=out)


def test_bad_predict_inputs(capsys, tmp_path):
    from kexue.models.pretrained import minilm_path

    fails(capsys, ["predict", str(minilm_path()), "[1, 2, 3]"], "pair")
    fails(capsys, ["predict", str(minilm_path()), "x", "--top-k", "3"], "does not apply")
    fails(capsys, ["predict", str(minilm_path())], "no inputs")
    fails(capsys, ["predict", str(minilm_path()), "x", "--output", str(tmp_path)], "is a folder")
    fails(capsys, ["chat", str(minilm_path())], "dialogue model")


def test_unknown_command_and_option(capsys):
    fails(capsys, ["nerd"], "unknown command")
    fails(capsys, ["ner", "--epoch", "3"], "unrecognized arguments")


# -- help, version, debug --------------------------------------------------------------------------
def option_helps(text: str) -> dict[str, tuple[bool, str]]:
    """``{option: (takes a value, help text)}`` from an argparse --help page."""
    helps, current = {}, None
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("  -") and not line.startswith("   "):
            head, _, rest = stripped.partition("  ")
            words = head.split()
            current = [w.rstrip(",") for w in words if w.startswith("-")][-1]
            helps[current] = (not words[-1].startswith("-"), rest.strip())
        elif current and line.startswith(" " * 8) and stripped:
            takes, old = helps[current]
            helps[current] = (takes, (old + " " + stripped).strip())
        else:
            current = None
    return helps


def _every_help() -> list[str]:
    """Every command of the registry, and the subcommands of those that have them."""
    from kexue.recipes import COMMANDS

    subcommands = {"index": ["index build", "index add"], "convert": ["convert bert4keras"]}
    return sorted(c for name in COMMANDS for c in subcommands.get(name, [name]))


@pytest.mark.parametrize("name", _every_help())
def test_help_shows_defaults_and_describes_every_option(capsys, name):
    capsys.readouterr()
    assert cli([*name.split(), "--help"]) == 0
    helps = option_helps(capsys.readouterr().out)
    assert len(helps) >= 3 and "--help" in helps
    for option, (takes_value, text) in helps.items():
        assert text, f"kexue {name} {option} has no description"
        if takes_value:
            assert "default" in text.lower() or "(required)" in text, f"kexue {name} {option}: default not shown"


def test_version_and_debug(capsys, out):
    import kexue

    capsys.readouterr()
    assert cli(["--version"]) == 0 and capsys.readouterr().out.strip() == f"kexue {kexue.__version__}"
    assert cli(["--debug", "ner", "--epochs", "0", "--out", str(out)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_real_process_prints_one_line(tmp_path):
    """Through the interpreter (as the `kexue` script runs): stderr is one line, status 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "kexue.cli", "classify", "--lr", "nan", "--out", str(tmp_path / "o")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
    r = subprocess.run([sys.executable, "-m", "kexue.cli", "classify", "--train", str(tmp_path / "none.tsv")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("kexue: error: ") and r.stderr.count("\n") == 1


def test_incomplete_model_folder(capsys, tmp_path):
    """A saved folder missing its task head or its task settings is refused by name, never half-loaded."""
    model = tmp_path / "cls"
    assert cli(["classify", "--limit", "8", "--epochs", "1", "--maxlen", "32", "--out", str(model), "--no-progress"]) == 0
    assert cli(["predict", str(model), "床前明月光"]) == 0
    (model / "head.safetensors").unlink()
    fails(capsys, ["predict", str(model), "床前明月光"], "head.safetensors")
    (model / "task.json").unlink()
    fails(capsys, ["predict", str(model), "床前明月光"], "task.json")


def test_nonfinite_training_stops_in_one_line_and_saves_nothing(capsys, out):
    """An absurd learning rate makes the loss NaN: the run stops with the engine's message and leaves
    --out's files as they were (no model written); its run folder keeps the last good checkpoint, named in the
    message, to resume from with a lower learning rate."""
    from kexue.io import holds_model
    from kexue.train.state import read_progress

    files = snapshot(out)
    line = fails(capsys, ["classify", "--limit", "16", "--epochs", "3", "--lr", "1e30", "--out", str(out),
                          "--no-progress"], "non-finite", "last good checkpoint (step 2)")
    assert snapshot(out, files_only=True) == files and not holds_model(out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "train"] and str(out / "train") in line
    assert read_progress(out / "train" / "state.safetensors")["step"] == 2


def test_serve_on_a_busy_port_is_one_line(capsys):
    """A port another server listens on: one `kexue: error:` line naming --port, exit 2, before the model loads."""
    import socket

    from kexue.models.pretrained import minilm_path

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        fails(capsys, ["serve", str(minilm_path()), "--host", "127.0.0.1", "--port", str(port)], f"--port {port}")
    finally:
        busy.close()
