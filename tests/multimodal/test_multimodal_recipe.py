"""``kexue multimodal`` on a slice of the digits: trains in seconds, saves a folder, and the folder works through
``kexue.load``, ``kexue predict`` and ``kexue serve`` (FastAPI TestClient) with the same answers; a reloaded folder
gives identical outputs for the same seed; an image folder with class subfolders trains too."""
import base64
import io
import json

import numpy as np
import pytest
import torch

import kexue
from kexue.cli import main as cli
from kexue.data.images import digits
from kexue.recipes.multimodal import image_from_json, image_to_json
from kexue.multimodal import ImageSpec

FILES = {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "head.safetensors", "task.json",
         "metrics.json", "loss.png", "README.md", "samples.png", "eval_predictions.jsonl"}
TINY = ["--steps", "30", "--hidden", "32", "--layers", "1", "--heads", "4", "--no-progress", "--sample-steps", "4"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mm") / "model"
    assert cli(["multimodal", "--out", str(out), "--limit", "120", *TINY]) == 0
    return out


def digit(i: int) -> list:
    x, _ = digits()
    return image_to_json(x[i])["image"]


def test_folder_and_metrics(folder):
    assert FILES <= {p.name for p in folder.iterdir()}
    m = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert m["task"] == "multimodal" and m["n_train"] == 102 and m["n_eval"] == 18 and 0 <= m["caption_accuracy"] <= 1
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))["kexue"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))  # the task is stored there once
    assert manifest["task"] == "multimodal" and cfg["rope_tie"] is True and cfg["application"] == "unilm"


def test_predictor_reproduces_the_recipes_evaluation(folder):
    rows = [json.loads(line) for line in (folder / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 18
    got = kexue.load(folder).predict([{"image": r["image"]} for r in rows])
    assert got == [{"caption": r["caption"], "label": r["label"]} for r in rows]
    m = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert m["caption_accuracy"] == pytest.approx(sum(r["label"] == r["true_label"] for r in rows) / 18)


def test_text_to_image_and_image_to_text(folder):
    p = kexue.load(folder)
    out = p.predict(["数字 7", {"text": "数字 3"}, {"image": digit(0)}], seed=5)
    a, b, c = out
    assert a["text"] == "数字 7" and len(a["image"]) == 8 and all(len(r) == 8 for r in a["image"])
    assert all(0 <= v <= 1 for r in a["image"] for v in r)
    from PIL import Image
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(a["png"]))), dtype=np.float64) / 255
    np.testing.assert_allclose(png, np.array(a["image"]), atol=1 / 255 + 1e-4)  # the PNG is the same picture
    assert a["image"] != b["image"]
    assert set(c) == {"caption", "label"} and (c["label"] is None or c["caption"] == f"数字 {c['label']}")
    # the generated image goes back in as an input, as a list or as its PNG
    back = p.predict([{"image": a["image"]}, {"image": a["png"]}])
    assert back[0] == back[1]


def test_same_seed_same_image_in_any_batch_and_after_reloading(folder):
    one = kexue.load(folder).predict(["数字 7"], seed=11)[0]
    again = kexue.load(folder).predict([{"image": digit(3)}, "数字 1", "数字 7"], seed=11)
    assert again[2]["image"] == one["image"] and again[2]["png"] == one["png"]
    other = kexue.load(folder).predict(["数字 7"], seed=12)[0]
    assert other["image"] != one["image"]
    caps = [kexue.load(folder).predict([{"image": digit(i)} for i in range(5)]) for _ in range(2)]
    assert caps[0] == caps[1]


def test_kexue_predict_command(folder, tmp_path, capsys):
    out = tmp_path / "pred.jsonl"
    image = json.dumps({"image": digit(1)})
    assert cli(["predict", str(folder), "数字 7", image, "--seed", "4", "--output", str(out)]) == 0
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert got == kexue.load(folder).predict(["数字 7", {"image": digit(1)}], seed=4)


def test_kexue_serve(folder):
    from fastapi.testclient import TestClient

    from kexue.cli.serve import create_app

    predictor = kexue.load(folder)
    with TestClient(create_app(predictor, str(folder), max_wait_ms=1)) as client:
        assert client.get("/health").json()["task"] == "multimodal"
        r = client.post("/predict", json={"inputs": ["数字 2", {"image": digit(2)}], "options": {"seed": 3}})
        assert r.status_code == 200
        assert r.json()["outputs"] == predictor.predict(["数字 2", {"image": digit(2)}], seed=3)
        for body, words in [({"inputs": [{"image": [[0.5] * 3] * 3}]}, "8×8"),
                            ({"inputs": [{"image": [[2.0] * 8] * 8}]}, "[0, 1]"),
                            ({"inputs": [{"text": "猫"}]}, "never saw"),
                            ({"inputs": [{"text": "数字 1", "image": digit(0)}]}, "multimodal input"),
                            ({"inputs": [{"image": "not base64!"}]}, "base64"),
                            ({"inputs": ["数字 1"], "options": {"top_k": 3}}, "does not apply")]:
            r = client.post("/predict", json=body)
            assert r.status_code == 400 and words in r.json()["error"], (body, r.json())


def test_image_json_round_trip():
    spec = ImageSpec(4, 2, 3)
    x = torch.rand(3, 4, 4) * 2 - 1
    j = image_to_json(x)
    assert np.array(j["image"]).shape == (4, 4, 3)
    torch.testing.assert_close(image_from_json(j["image"], spec), x, atol=1e-4, rtol=0)
    torch.testing.assert_close(image_from_json(j["png"], spec), x, atol=1 / 255 + 1e-6, rtol=0)


def test_image_folder_with_classes(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for name, bright in (("cat", 220), ("dog", 30)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            arr = np.clip(rng.normal(bright, 20, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "data" / name / f"{i}.png")
    out = tmp_path / "model"
    assert cli(["multimodal", "--images", str(tmp_path / "data"), "--size", "4", "--channels", "3", "--out", str(out),
                *TINY]) == 0
    p = kexue.load(out)
    drawn = p.predict(["cat"], seed=0)[0]
    assert np.array(drawn["image"]).shape == (4, 4, 3)
    cap = p.predict([{"image": drawn["image"]}])[0]
    assert cap["label"] in ("cat", "dog", None)


@pytest.mark.parametrize("args, words", [
    (["--caption", "数字"], "{label}"),
    (["--size", "9"], "multiple of --patch"),
    (["--hidden", "30"], "--heads"),
    (["--hidden", "20"], "even number"),
    (["--images", "/no/such/folder"], "no such folder"),
    (["--channels", "3"], "--channels applies to --images"),
])
def test_bad_arguments(tmp_path, capsys, args, words):
    code = cli(["multimodal", "--out", str(tmp_path / "m"), "--steps", "1", "--no-progress", *args])
    assert code != 0 and words in capsys.readouterr().err
