"""Every recipe on a tiny slice of real data saves a model folder whose predictor — through
``kexue.load(DIR).predict`` and through ``kexue predict`` — reproduces the recipe's own evaluation
predictions exactly."""
import json

import pytest
import torch

import kexue
from kexue.data import shipped as datasets
from kexue.cli import main as cli
from kexue.recipes.metrics import bio_to_spans

FOLDER_FILES = {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "task.json", "metrics.json",
                "loss.png", "README.md", "eval_predictions.jsonl", "manifest.json"}


def bioes(tags):
    """BIO -> BIOES (the rewrite the recipe must read back to the same spans)."""
    out = list(tags)
    for kind, s, e in bio_to_spans(tags):
        out[s:e + 1] = [f"S-{kind}"] if s == e else [f"B-{kind}"] + [f"I-{kind}"] * (e - s - 1) + [f"E-{kind}"]
    return out


def write_tagged(path, sents):
    path.write_text("".join("".join(f"{c} {t}\n" for c, t in zip(chars, tags)) + "\n" for chars, tags in sents),
                    encoding="utf-8")


def train(tmp_path_factory, name, *args):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp(name) / "model"
    assert cli([name, "--out", str(out), "--no-progress", "--epochs", "1", *args]) == 0
    return out


def rows(out):
    return [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def check_same(out, inputs, tmp_path, key_inputs=None):
    """load().predict and `kexue predict --input` both give the recipe's eval predictions."""
    expected = rows(out)
    assert expected and len(expected) == len(inputs)
    assert kexue.load(out).predict(inputs) == expected
    src, dst = tmp_path / "inputs.jsonl", tmp_path / "preds.jsonl"
    src.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in inputs), encoding="utf-8")
    assert cli(["predict", str(out), "--input", str(src), "--output", str(dst)]) == 0
    assert [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()] == expected
    return expected


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory):
    """BIOES train file from example.dev; dev file from example.test with LOC renamed to an unseen type."""
    data = tmp_path_factory.mktemp("ner-data")
    train_s = [s for s in datasets.ner_peoples_daily("dev") if any(t != "O" for t in s[1])][:24]
    test_s = datasets.ner_peoples_daily("test")[:16]
    test_s = [(c, [t.replace("-LOC", "-PLACE") for t in tags]) for c, tags in test_s]
    write_tagged(data / "train.bioes", [(c, bioes(t)) for c, t in train_s])
    write_tagged(data / "dev.bio", test_s)
    return train(tmp_path_factory, "ner", "--train", str(data / "train.bioes"), "--dev", str(data / "dev.bio"),
                 "--maxlen", "48"), test_s


def test_ner_reads_bioes_and_survives_an_unseen_type(ner_model, tmp_path):
    out, test_s = ner_model
    assert FOLDER_FILES | {"head.safetensors"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))  # the task and labels, stored once
    assert manifest["task"] == "ner" and manifest["labels"] == ["LOC", "ORG", "PER"] and manifest["kind"] == "task"
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert "task" not in config["kexue"] and "labels" not in config["kexue"]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["eval_types_unseen_in_training"] == ["PLACE"] and metrics["n_gold"] > 0
    preds = check_same(out, ["".join(c) for c, _ in test_s], tmp_path)
    for p in preds:  # character offsets: text[start:end] is the entity
        assert all(p["text"][e["start"]:e["end"]] == e["text"] and e["type"] in ("LOC", "ORG", "PER")
                   for e in p["entities"])


def test_ner_flat_decoding(ner_model, tmp_path_factory, tmp_path):
    """--decode flat: the saved folder reproduces the evaluation, whose spans never overlap and are the greedy
    by-score subset of the nested spans of the same model; a folder written before --decode decodes nested."""
    import hashlib

    _, test_s = ner_model
    data = tmp_path_factory.mktemp("ner-flat-data")
    write_tagged(data / "train.bio", [s for s in datasets.ner_peoples_daily("dev") if any(t != "O" for t in s[1])][:24])
    write_tagged(data / "dev.bio", test_s)
    out = train(tmp_path_factory, "ner", "--train", str(data / "train.bio"), "--dev", str(data / "dev.bio"),
                "--maxlen", "48", "--decode", "flat")
    assert json.loads((out / "task.json").read_text(encoding="utf-8"))["settings"]["decode"] == "flat"
    texts = ["".join(c) for c, _ in test_s]
    flat = check_same(out, texts, tmp_path)
    predictor = kexue.load(out)
    predictor.tagger.decode = "nested"
    nested = predictor.predict(texts)
    key = lambda e: (e["type"], e["start"], e["end"])  # noqa: E731
    assert sum(len(p["entities"]) for p in nested) > sum(len(p["entities"]) for p in flat) > 0
    for f, n in zip(flat, nested):
        ents = sorted(f["entities"], key=lambda e: e["start"])
        assert all(x["end"] <= y["start"] for x, y in zip(ents, ents[1:]))  # no shared character
        assert {key(e) for e in f["entities"]} <= {key(e) for e in n["entities"]}
    # the folder as an older kexue wrote it (no 'decode' setting): nested decoding
    task = json.loads((out / "task.json").read_text(encoding="utf-8"))
    del task["settings"]["decode"]
    raw = (json.dumps(task, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    (out / "task.json").write_bytes(raw)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["task.json"] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert kexue.load(out).predict(texts) == nested


def test_ner_decode_flat_is_refused_with_a_crf(tmp_path, capsys):
    assert cli(["ner", "--head", "crf", "--decode", "flat", "--out", str(tmp_path / "m")]) == 2
    assert "--decode applies to the GlobalPointer heads" in capsys.readouterr().err


def test_bioes_reads_as_the_same_spans_as_bio():
    for _, tags in datasets.ner_peoples_daily("dev")[:200]:
        assert bio_to_spans(bioes(tags)) == bio_to_spans(tags)
    assert bio_to_spans(["B-X", "M-X", "E-X", "S-Y", "O", "E-Z"]) == {("X", 0, 2), ("Y", 3, 3), ("Z", 5, 5)}


def test_classify_single_texts(tmp_path_factory, tmp_path):
    out = train(tmp_path_factory, "classify", "--limit", "24", "--maxlen", "48")
    texts = [r["text"] for r in rows(out)]
    preds = check_same(out, texts, tmp_path)
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in preds)


def test_classify_sentence_pairs_from_lcqmc(tmp_path_factory, tmp_path, shared_dir):
    lines = (shared_dir / "data/sim-zh/LCQMC.valid.data").read_text(encoding="utf-8").splitlines()
    data = tmp_path_factory.mktemp("lcqmc")
    (data / "train.tsv").write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
    (data / "dev.tsv").write_text("\n".join(lines[40:52]) + "\n", encoding="utf-8")
    out = train(tmp_path_factory, "classify", "--train", str(data / "train.tsv"), "--dev", str(data / "dev.tsv"),
                "--maxlen", "64")
    pairs = [line.split("\t")[:2] for line in lines[40:52]]
    preds = check_same(out, pairs, tmp_path)
    assert {p["label"] for p in preds} <= {"0", "1"}
    with pytest.raises(ValueError, match="sentence-pair model"):
        kexue.load(out).predict(["just one text"])


def test_poem(tmp_path_factory, tmp_path):
    out = train(tmp_path_factory, "poem", "--limit", "16", "--maxlen", "40", "--samples", "2")
    expected = check_same(out, [r["class"] for r in rows(out)], tmp_path)
    assert all(len(r["poems"]) == 2 for r in expected)
    p = kexue.load(out)
    assert p.predict(["唐"], seed=3) == p.predict(["唐"], seed=3)  # same seed, same poems
    beams = p.predict([{"class": "宋", "prefix": "明月"}], num_beams=3, num_samples=2, max_new_tokens=8)
    assert len(beams[0]["poems"]) == 2 and all(s.startswith("明月") for s in beams[0]["poems"])
    with pytest.raises(ValueError, match="unknown class"):
        p.predict(["元"])


def test_reading(tmp_path_factory, tmp_path):
    out = train(tmp_path_factory, "reading", "--limit", "3", "--maxlen", "64", "--max-answer", "4")
    records = [{"question": r["question"], "passages": [q["passage"] for q in r["passages"]]}
               for r in datasets.webqa()[:3]]
    check_same(out, records, tmp_path)


@pytest.fixture(scope="module")
def dialogue_model(tmp_path_factory):
    return train(tmp_path_factory, "dialogue", "--limit", "16", "--maxlen", "48")


def test_dialogue_and_chat(dialogue_model, tmp_path, monkeypatch, capsys):
    out = dialogue_model
    check_same(out, [r["context"] for r in rows(out)], tmp_path)
    first = rows(out)[0]
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("".join(t + "\n" for t in first["context"][:1])))
    capsys.readouterr()
    assert cli(["chat", str(out)]) == 0
    reply = capsys.readouterr().out.strip()
    assert reply == kexue.load(out).predict([first["context"][:1]])[0]["reply"]


def test_encoder_embed_search_and_pair_similarity(tmp_path, capsys):
    """The embedded all-MiniLM-L6-v2 folder as an encoder: vectors equal sentence-transformers'."""
    from sentence_transformers import SentenceTransformer

    from kexue.models.pretrained import minilm_path

    texts = [p.a for p in datasets.sts_en("test")[:6]]
    capsys.readouterr()
    assert cli(["embed", str(minilm_path()), *texts]) == 0
    got = torch.tensor([json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()])
    ref = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, convert_to_tensor=True,
                                                                               normalize_embeddings=True)
    assert torch.allclose(got, ref.float(), atol=1e-5)
    sim = kexue.load(minilm_path()).predict([[texts[0], texts[1]]])[0]["similarity"]
    assert sim == pytest.approx(float(ref[0] @ ref[1]), abs=1e-5)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(texts) + "\n", encoding="utf-8")  # blank lines are skipped, lines still count
    assert cli(["search", str(minilm_path()), "--corpus", str(corpus), "--top-k", "2", texts[2]]) == 0
    hit = json.loads(capsys.readouterr().out)
    assert hit["results"][0]["line"] == 5 and hit["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_int8_predict(capsys):
    pytest.importorskip("kexue.tools.quantize")
    from kexue.models.pretrained import minilm_path

    texts = [p.a for p in datasets.sts_en("test")[:4]]
    full = torch.tensor([r["embedding"] for r in kexue.load(minilm_path()).predict(texts)])
    q = torch.tensor([r["embedding"] for r in kexue.load(minilm_path(), quantize="int8").predict(texts)])
    capsys.readouterr()
    assert cli(["embed", str(minilm_path()), "--int8", *texts]) == 0
    cli_q = torch.tensor([json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()])
    assert torch.equal(cli_q, q)
    cos = torch.nn.functional.cosine_similarity(full, q)
    assert (cos > 0.95).all() and not torch.equal(full, q)  # quantized (int8 MiniLM: cos 0.97-0.99), same vectors roughly


def test_plain_lm_folder_generates_like_a_plain_greedy_loop(dialogue_model, tmp_path):
    """A folder whose kexue block names no task but application lm is a generator; greedy
    generation equals argmax over a full forward pass at every step (no cache, written plainly)."""
    import shutil

    lm_dir = tmp_path / "lm"
    shutil.copytree(dialogue_model, lm_dir)
    for name in ("manifest.json", "task.json"):  # a plain LM folder: no manifest naming a task, no task settings
        (lm_dir / name).unlink()
    config = json.loads((lm_dir / "config.json").read_text(encoding="utf-8"))
    assert "task" not in config["kexue"] and "labels" not in config["kexue"] and config["kexue"]["application"] == "lm"
    p = kexue.load(lm_dir)
    assert p.task == "generate"
    text = "晓带轻烟间杏花"
    got = p.predict([text], max_new_tokens=6)[0]["generations"][0]
    model, tok = p.lm, p.tokenizer
    ids = tok.encode(text)[0][:-1]
    banned = [tok.pad_id, tok.cls_id, tok.mask_id, tok.unk_id]
    new = []
    with torch.no_grad():
        for _ in range(6):
            logits = model(torch.tensor([ids + new])).logits[0, -1]
            logits[banned] = float("-inf")
            token = int(logits.argmax())
            if token == tok.sep_id:
                break
            new.append(token)
    assert got == tok.decode(new)
    beams = p.predict([text], num_beams=3, num_samples=2, max_new_tokens=4)[0]["generations"]
    assert len(beams) == 2
    with pytest.raises(ValueError, match="does not apply"):
        p.predict([text], rdrop=1)


def test_demo_style_fine_tuned_encoder_is_usable(tmp_path, capsys):
    """The demo's step: CoSENT-fine-tune MiniLM (2 steps on STS-B train), save_pretrained; then
    `kexue embed` on the folder gives the fine-tuned model's own vectors, not the original's."""
    from kexue.models.checkpoints import save_pretrained
    from kexue.models.pretrained import embed, minilm
    from kexue.similarity.finetune import finetune_cosent

    model, tok = minilm()
    finetune_cosent(model, tok, datasets.sts_en("train")[:32], seconds=None, batch_size=16, max_steps=2, progress=False)
    save_pretrained(model, tmp_path / "encoder", tok)
    texts = [p.a for p in datasets.sts_en("test")[:4]]
    capsys.readouterr()
    assert cli(["embed", str(tmp_path / "encoder"), *texts]) == 0
    got = torch.tensor([json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()])
    assert torch.allclose(got, embed(model, tok, texts), atol=1e-6)
    original = embed(*minilm(), texts)
    assert not torch.allclose(got, original, atol=1e-4)


def test_t5_pegasus_folder_generates_like_a_plain_greedy_loop(tmp_path):
    """A T5 PEGASUS-layout folder (T5 + word/char vocab.txt) is a generator: greedy equals a loop that
    re-runs the decoder on the whole prefix each step (no cache)."""
    from kexue.models.checkpoints import save_pretrained
    from kexue.models import build_model
    from kexue.models.t5 import T5Config
    from kexue.models.t5_pegasus import t5_pegasus_tokenizer, word_char_vocab

    tok = t5_pegasus_tokenizer(word_char_vocab(datasets.chinese_text(200)))
    cfg = T5Config.from_dict(dict(vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                  decoder_start_token_id=tok.cls_id, eos_token_id=tok.sep_id, pad_token_id=tok.pad_id))
    torch.manual_seed(1)
    model = build_model(cfg, family="t5").eval()
    save_pretrained(model, tmp_path / "t5", tok)
    p = kexue.load(tmp_path / "t5")
    assert p.task == "generate"
    text = "床前明月光，疑是地上霜。"
    got = p.predict([text], max_new_tokens=6)[0]["generations"][0]
    ids = torch.tensor([tok.encode(text)[0]])
    tokens = [tok.cls_id]
    with torch.no_grad():
        enc = model.encode(ids, None)
        for _ in range(6):
            nxt = int(model.decode(torch.tensor([tokens]), enc, None)[0, -1].argmax())
            if nxt == tok.sep_id:
                break
            tokens.append(nxt)
    assert got == tok.decode(tokens[1:]) and len(tokens) > 1
