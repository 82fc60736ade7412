"""Models by hub id through huggingface_hub, against a local stand-in hub on 127.0.0.1 (nothing leaves the
machine): download, cache hit (no file fetched twice), offline mode, missing repository / revision / file,
``org/name@revision``. Each scenario runs in a fresh interpreter, as a user's command would, since
huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub_server import Hub

REPO = Path(__file__).resolve().parents[1]
ZH_MINI = REPO / "kexue" / "weights" / "kexue-zh-mini"

SCRIPT = """
import json, sys
from kexue.hub import HubError, resolve, require
try:
    folder = resolve(sys.argv[1])
    require(folder, sys.argv[1], "config.json")
    print(json.dumps({"folder": str(folder), "files": sorted(p.name for p in folder.iterdir())}))
except HubError as e:
    print(json.dumps({"error": str(e)}))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    v1 = tmp_path_factory.mktemp("v1")
    (v1 / "config.json").write_text(json.dumps({"model_type": "bert", "note": "v1"}))
    bare = tmp_path_factory.mktemp("bare")
    (bare / "README.md").write_text("no model here\n")
    h = Hub({"kexue/zh-mini": {"main": str(ZH_MINI), "v1": str(v1)}, "kexue/bare": {"main": str(bare)}})
    h.url = h.start()
    yield h
    h.server.shutdown()


def run(hub, spec, cache, offline=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1" if offline else "0",
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", SCRIPT, spec], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def downloads(hub):
    return [p for m, p in hub.requests if m == "GET" and "/resolve/" in p]


def test_download_then_cache_hit_then_offline(hub, tmp_path):
    got = run(hub, "kexue/zh-mini", tmp_path)
    folder = Path(got["folder"])
    assert got["files"] == sorted(p.name for p in ZH_MINI.iterdir())
    for p in ZH_MINI.iterdir():  # byte for byte
        assert (folder / p.name).read_bytes() == p.read_bytes()
    n = len(downloads(hub))
    assert run(hub, "kexue/zh-mini", tmp_path)["folder"] == str(folder)
    assert len(downloads(hub)) == n, "a cached file was downloaded again"
    before = len(hub.requests)
    assert run(hub, "kexue/zh-mini", tmp_path, offline=True)["folder"] == str(folder)
    assert len(hub.requests) == before, "offline mode reached the hub"


def test_the_downloaded_folder_builds_the_same_model(hub, tmp_path):
    import torch

    from kexue.models import build_model

    folder = Path(run(hub, "kexue/zh-mini", tmp_path)["folder"])
    a, b = build_model(checkpoint=folder).eval(), build_model(checkpoint=ZH_MINI).eval()
    ids = torch.tensor([[2, 100, 200, 300, 3]])
    assert torch.equal(a(ids).hidden, b(ids).hidden)


def test_revision(hub, tmp_path):
    got = run(hub, "kexue/zh-mini@v1", tmp_path)
    assert got["files"] == ["config.json"]
    assert json.loads((Path(got["folder"]) / "config.json").read_text())["note"] == "v1"


def test_offline_without_cache(hub, tmp_path):
    err = run(hub, "kexue/zh-mini", tmp_path, offline=True)["error"]
    assert "kexue/zh-mini" in err and "HF_HUB_OFFLINE" in err and "\n" not in err


def test_missing_repository_revision_and_file(hub, tmp_path):
    err = run(hub, "nobody/nothing", tmp_path)["error"]
    assert "nobody/nothing" in err and hub.url in err
    err = run(hub, "kexue/zh-mini@v9", tmp_path)["error"]
    assert "'v9'" in err and "kexue/zh-mini" in err
    err = run(hub, "kexue/bare", tmp_path)["error"]
    assert "kexue/bare" in err and "config.json" in err and "README.md" in err


def test_local_paths_win(tmp_path, monkeypatch):
    from kexue.hub import is_hub_id, resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert resolve("org/name") == Path("org/name") and not is_hub_id("org/name")
    assert is_hub_id("org/other") and is_hub_id("org/other@main") and not is_hub_id("a/b/c")
