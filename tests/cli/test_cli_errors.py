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


@pytest.mark.parametrize("name", ["ner", "classify", "poem", "reading", "dialogue", "similarity", "predict", "embed",
                                  "search", "chat", "serve", "evaluate"])
def test_help_shows_defaults_and_describes_every_option(capsys, name):
    capsys.readouterr()
    assert cli([name, "--help"]) == 0
    helps = option_helps(capsys.readouterr().out)
    assert len(helps) > 3 and "--help" in helps
    for option, (takes_value, text) in helps.items():
        assert text, f"kexue {name} {option} has no description"
        if takes_value:
            assert "default" in text.lower(), f"kexue {name} {option}: default not shown"


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
