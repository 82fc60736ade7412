"""kexue.io's folder unit: ``write_folder`` swaps a complete folder in (renameat2 exchange, or the rename-aside
fallback), a failed write leaves the old folder byte for byte, ``recover_folder`` finishes or undoes what a
killed write left, ``check_folder`` verifies the manifest (sizes and sha256 recomputed here with hashlib),
and ``safetensors_header`` reads shapes as the safetensors library does and names truncated files."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import kexue.io as kio
from kexue.io import FolderError, check_folder, check_type, folder_info, recover_folder, safetensors_header, write_folder


def snapshot(d):
    """Every entry under ``d`` (relative path -> bytes, or None for a folder)."""
    return {p.relative_to(d).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in sorted(d.rglob("*"))}


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".kexue-" in p.name or p.name.endswith(".tmp"))


def save(out, files, overwrite=True, info=None):
    with write_folder(out, info or folder_info("custom", task="demo"), overwrite=overwrite) as stage:
        for name, text in files.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_text(text, encoding="utf-8")
    return out


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_fresh_write_records_every_file_and_overwrite_replaces_the_model_but_keeps_other_entries(tmp_path):
    out = tmp_path / "m"
    save(out, {"config.json": "{}", "a.txt": "alpha", "sub/b.txt": "beta"}, overwrite=False)
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for rel in ("config.json", "a.txt", "sub/b.txt"):
        data = (out / rel).read_bytes()
        assert m["files"][rel] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert set(m["files"]) == {"config.json", "a.txt", "sub/b.txt"} and m["other"] == []
    assert (m["format"], m["version"], m["kind"], m["task"]) == ("kexue-folder", 1, "custom", "demo")
    assert check_folder(out) == m and leftovers(tmp_path) == []
    with pytest.raises(FolderError, match="already holds a model; pass overwrite"):
        save(out, {"config.json": "{}"}, overwrite=False)
    (out / "train").mkdir()  # a run folder and a user's file beside the model: carried over, recorded as other
    (out / "train" / "state.safetensors").write_bytes(b"run")
    (out / "notes.txt").write_text("mine")
    (out / ".config.json.abcd1234.tmp").write_text("a killed write's temp file")
    save(out, {"config.json": '{"v": 2}'})
    assert snapshot(out) == {"config.json": b'{"v": 2}', "manifest.json": (out / "manifest.json").read_bytes(),
                             "notes.txt": b"mine", "train": None, "train/state.safetensors": b"run"}
    m = check_folder(out)  # a.txt and sub/ of the old model are gone, the temp file too
    assert m["other"] == ["notes.txt", "train"] and set(m["files"]) == {"config.json"}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_overwrite_swaps_and_a_failed_write_leaves_the_old_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(kio, "_exchange", lambda a, b: False)
    out = save(tmp_path / "m", {"config.json": "old", "w.bin": "old weights"})
    (out / "train").mkdir()
    before = snapshot(out)
    with pytest.raises(RuntimeError, match="boom"):
        with write_folder(out, folder_info("encoder"), overwrite=True) as stage:
            (stage / "config.json").write_text("new")
            raise RuntimeError("boom")
    assert snapshot(out) == before and leftovers(tmp_path) == []
    calls = []
    real_rename = os.rename

    def failing_rename(a, b):  # the swap itself fails once (moving the new folder in, or the old one aside):
        hit = str(b) == str(out) if exchange else str(a) == str(out)  # the carried entries go back, the old
        calls.append(hit)  # folder stays intact
        if hit and calls.count(True) == 1:
            raise OSError(28, "No space left on device")
        return real_rename(a, b)

    monkeypatch.setattr(kio, "_exchange", lambda a, b: False)
    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="No space"):
        save(out, {"config.json": "new"})
    monkeypatch.setattr(os, "rename", real_rename)
    assert snapshot(out) == before and leftovers(tmp_path) == [] and calls
    if exchange:
        monkeypatch.undo()
    save(out, {"config.json": "new"})
    assert (out / "config.json").read_text() == "new" and (out / "train").is_dir() and leftovers(tmp_path) == []
    assert check_folder(out)["other"] == ["train"]


def test_renameat2_exchange_swaps_two_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("from a")
    if not kio._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("no renameat2 here: the rename-aside fallback is tested instead")
    assert (tmp_path / "b" / "x").read_text() == "from a" and not (tmp_path / "a" / "x").exists()


def test_recovery_of_what_killed_writes_left(tmp_path):
    out = save(tmp_path / "m", {"config.json": "old"})
    old = snapshot(out)
    pid = dead_pid()
    # 1. a staging folder of a killed write, half written: removed at the next write, out untouched
    stage = tmp_path / f".m.kexue-new-{pid}-0123abcd"
    stage.mkdir()
    (stage / "config.json").write_text("half")
    (stage / ".model.safetensors.x1y2z3.tmp").write_text("partial")
    assert recover_folder(out) == [f"{out}: removed {stage.name}, left by an interrupted save"]
    assert snapshot(out) == old and leftovers(tmp_path) == []
    # 2. a staging folder that had already taken over an entry of the old folder: it goes back
    (out / "train").mkdir()
    save(out, {"config.json": "old"})  # the folder now records train as other
    stage.mkdir()
    os.rename(out / "train", stage / "train")
    (stage / "manifest.json").write_text(json.dumps({"other": ["train"]}))
    recover_folder(out)
    assert (out / "train").is_dir() and leftovers(tmp_path) == []
    # 3. killed between the two renames of the fallback: out missing, the old folder aside
    os.rmdir(out / "train")
    save(out, {"config.json": "old"})
    aside = tmp_path / f".m.kexue-old-{pid}-89abcdef"
    os.rename(out, aside)
    save(tmp_path / "new", {"config.json": "new"})
    os.rename(tmp_path / "new", stage)  # a complete new folder: it is the one restored
    assert "restored the new folder" in recover_folder(out)[0]
    assert (out / "config.json").read_text() == "new" and leftovers(tmp_path) == []
    # ... and with the new folder incomplete (no manifest yet), the old one comes back
    os.rename(out, aside)
    stage.mkdir()
    (stage / "config.json").write_text("half")
    assert "restored the old folder" in recover_folder(out)[0]
    assert (out / "config.json").read_text() == "new" and check_folder(out) and leftovers(tmp_path) == []


def test_a_running_writer_is_not_disturbed(tmp_path):
    out = save(tmp_path / "m", {"config.json": "x"})
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stage = tmp_path / f".m.kexue-new-{p.pid}-0123abcd"
        stage.mkdir()
        with pytest.raises(FolderError, match=f"being written by process {p.pid}"):
            save(out, {"config.json": "y"})
        assert stage.is_dir() and (out / "config.json").read_text() == "x"
    finally:
        p.kill()
        p.wait()


def test_refuses_the_current_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FolderError, match="current folder"):
        save(tmp_path, {"a": "b"})
    with pytest.raises(FolderError, match="current folder"):
        save(tmp_path / "..", {"a": "b"})
    (tmp_path / "f").write_text("x")
    with pytest.raises(FolderError, match="is a file"):
        save(tmp_path / "f", {"a": "b"})


@pytest.mark.parametrize("tamper, words", [
    (lambda d: (d / "a.txt").unlink(), ["a.txt: missing (listed in manifest.json)"]),
    (lambda d: [(d / n).unlink() for n in ("a.txt", "config.json")], ["a.txt", "config.json", "missing"]),
    (lambda d: (d / "a.txt").write_text("alph"), ["a.txt: 4 bytes, but manifest.json records 5"]),
    (lambda d: (d / "a.txt").write_text("alphA"), ["a.txt: its sha256 differs"]),
    (lambda d: (d / "extra.bin").write_text("?"), ["extra.bin: not listed in manifest.json"]),
    (lambda d: (d / "sub" / "c.txt").write_text("?"), ["c.txt: not listed in manifest.json"]),
    (lambda d: (d / "manifest.json").write_text("{\"format\": "), ["manifest.json: invalid JSON", "line 1 column 12"]),
    (lambda d: edit(d, labels="x"), ["manifest.json: field 'labels' must be a list of strings or null, got \"x\""]),
    (lambda d: edit(d, kind="model"), ["manifest.json: field 'kind' must be one of"]),
    (lambda d: edit(d, version=2), ["manifest.json: format version 2 is newer"]),
    (lambda d: edit(d, files={"a.txt": {"size": "5", "sha256": "0" * 64}}), ["field 'files.a.txt.size' must be an integer"]),
    (lambda d: edit(d, files={"../a.txt": {"size": 5, "sha256": "0" * 64}}), ["invalid name '../a.txt'"]),
    (lambda d: edit(d, post_processing={"whitening": {"file": "w.safetensors"}}), ["'post_processing.whitening.file'"]),
])
def test_check_folder_names_the_file_and_field(tmp_path, tamper, words):
    out = save(tmp_path / "m", {"config.json": "{}", "a.txt": "alpha", "sub/b.txt": "beta"})
    tamper(out)
    with pytest.raises(FolderError) as e:
        check_folder(out)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def edit(d, **fields):
    m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    (d / "manifest.json").write_text(json.dumps({**m, **fields}), encoding="utf-8")


def test_folder_info_and_check_type_refuse_wrong_fields():
    with pytest.raises(FolderError, match="field 'task' must name the task"):
        folder_info("task")
    with pytest.raises(FolderError, match="field 'task' must be null"):
        folder_info("encoder", task="x")
    with pytest.raises(FolderError, match="lists 'a' twice"):
        folder_info("task", task="t", labels=["a", "b", "a"])
    with pytest.raises(FolderError, match="field 'pooling' must be one of mean, cls"):
        folder_info("encoder", pooling="sum")
    with pytest.raises(FolderError, match=r"f.json: field 'n' must be an integer, got true"):
        check_type(True, "integer", "f.json", "n")
    assert check_type(None, "integer or null", "f.json", "n") is None


def test_safetensors_header_reads_shapes_and_names_a_truncated_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(3, 4), "b": torch.ones(7, dtype=torch.int64)}, str(path), metadata={"k": "v"})
    header, meta = safetensors_header(path, metadata=True)
    with safe_open(str(path), "pt") as f:  # the library's own reading is the oracle
        assert {k: f.get_slice(k).get_shape() for k in f.keys()} == {k: v["shape"] for k, v in header.items()}
        assert f.metadata() == meta
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 20, 5, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(FolderError, match=f"{path}: truncated"):
            safetensors_header(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(FolderError, match="has bytes past its last tensor"):
        safetensors_header(path)
    path.write_bytes(b"\x08\0\0\0\0\0\0\0not json")
    with pytest.raises(FolderError, match="its header is not JSON"):
        safetensors_header(path)
