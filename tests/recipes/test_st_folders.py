"""sentence-transformers folders both ways (kexue.recipes.st_folder), on the real all-MiniLM-L6-v2 and real
STS-B sentences; the oracle is sentence-transformers itself (SentenceTransformer(folder).encode)."""
import json
import shutil

import pytest
import torch

import kexue
from kexue.cli import dispatch
from kexue.data import shipped as datasets
from kexue.io import FolderError
from kexue.models.pretrained import minilm, minilm_path
from kexue.recipes.folder import save_encoder

st = pytest.importorskip("sentence_transformers")
MODES = {"mean": "mean", "cls": "cls", "max": "max", "weightedmean": "weighted-mean", "lasttoken": "last-token"}
LEGACY = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
          "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
          "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


@pytest.fixture(scope="module")
def texts():
    pairs = datasets.sts_en("test")[:4]
    return [p.a for p in pairs] + [p.b for p in pairs]


@pytest.fixture(scope="module")
def encoder():
    return minilm()


def st_folder(path, mode="mean", normalize=True, legacy=True, include_prompt=True, extra=(), prompts=None):
    """An ST folder built from the shipped weights (weights linked, not copied)."""
    path.mkdir()
    src = minilm_path()
    for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "sentence_bert_config.json"):
        shutil.copy(src / name, path / name)
    (path / "model.safetensors").symlink_to(src / "model.safetensors")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    modules += [{"idx": len(modules) + i, "name": str(len(modules) + i), "path": f"{len(modules) + i}_{kind}",
                 "type": f"sentence_transformers.models.{kind}"} for i, kind in enumerate(extra)]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    modes = [mode] if isinstance(mode, str) else mode
    config = ({"word_embedding_dimension": 384, **{k: m in modes for m, k in LEGACY.items()}} if legacy
              else {"embedding_dimension": 384, "pooling_mode": modes[0] if len(modes) == 1 else modes})
    (path / "1_Pooling" / "config.json").write_text(json.dumps({**config, "include_prompt": include_prompt}))
    if prompts is not None:
        (path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts,
                                                                             "default_prompt_name": None}))
    return path


def oracle(path, texts, **kw):
    return st.SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_tensor=True, **kw).float()


@pytest.mark.parametrize("normalize", [True, False])
def test_read_st_folder_every_pooling(tmp_path, texts, normalize, capsys):
    got = {}
    for i, (mode, name) in enumerate(MODES.items()):
        path = st_folder(tmp_path / mode, mode, normalize, legacy=i % 2 == 0)
        predictor = kexue.load(path)
        assert (predictor.spec.pooling, predictor.spec.normalize) == (name, normalize)
        got[mode] = predictor.embed(texts)
        assert torch.allclose(got[mode], oracle(path, texts), atol=1e-6), mode
        norms = got[mode].norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5) == normalize
    assert not torch.allclose(got["mean"], got["cls"], atol=1e-2)  # the modes really differ
    capsys.readouterr()
    assert dispatch(["embed", str(tmp_path / "cls"), *texts[:2]]) == 0
    cli = torch.tensor([json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()])
    assert torch.allclose(cli, got["cls"][:2], atol=1e-6)


@pytest.mark.parametrize("include_prompt", [True, False])
def test_st_prompts(tmp_path, texts, include_prompt, capsys):
    path = st_folder(tmp_path / "p", "mean", include_prompt=include_prompt,
                     prompts={"query": "query: find the sentence that says ", "passage": "passage: "})
    predictor = kexue.load(path)
    for name in ("query", "passage"):
        ref = oracle(path, texts, prompt_name=name)
        assert torch.allclose(predictor.embed(texts, prompt_name=name), ref, atol=1e-6)
    assert not torch.allclose(predictor.embed(texts, prompt_name="query"), predictor.embed(texts), atol=1e-3)
    with pytest.raises(ValueError, match="unknown prompt name 'doc'.*passage, query"):
        predictor.embed(texts, prompt_name="doc")
    capsys.readouterr()
    assert dispatch(["embed", str(path), "--prompt-name", "query", texts[0]]) == 0
    line = json.loads(capsys.readouterr().out)
    assert torch.allclose(torch.tensor(line["embedding"]), oracle(path, texts[:1], prompt_name="query")[0], atol=1e-6)


def test_st_max_seq_length(tmp_path, texts):
    path = st_folder(tmp_path / "short", "mean")
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 6, "do_lower_case": False}))
    predictor = kexue.load(path)
    assert predictor.maxlen == 6
    assert torch.allclose(predictor.embed(texts), oracle(path, texts), atol=1e-6)


@pytest.mark.parametrize("case, message", [
    (dict(extra=("Dense",)), "module 'Dense' is not supported"),
    (dict(extra=("LayerNorm",)), "module 'LayerNorm' is not supported"),
    (dict(mode="mean_sqrt_len_tokens"), "pooling mode 'mean_sqrt_len_tokens' is not supported"),
    (dict(mode=["cls", "mean"]), "2 pooling modes"),
    (dict(mode=["cls", "mean"], legacy=False), "2 pooling modes"),
])
def test_st_refusals(tmp_path, case, message):
    path = st_folder(tmp_path / "bad", **case)
    with pytest.raises(FolderError, match=message):
        kexue.load(path)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "weighted-mean", "last-token"])
def test_kexue_folder_read_by_sentence_transformers(tmp_path, texts, encoder, pooling):
    model, tok = encoder
    for normalize in (True, False):
        out = save_encoder(tmp_path / f"enc-{normalize}", model, tok, pooling=pooling, normalize=normalize, maxlen=64)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["pooling"] == pooling and ("normalize" in manifest["post_processing"]) == normalize
        assert (out / "2_Normalize").is_dir() == normalize
        got = kexue.load(out).embed(texts)
        assert torch.allclose(got, oracle(out, texts), atol=1e-6)
        assert torch.allclose(got, oracle(minilm_path(), texts, normalize_embeddings=False), atol=1e-6) == \
            (pooling == "mean" and normalize)  # the shipped folder pools by mean and normalises


def test_first_last_avg_has_no_st_modules(tmp_path, texts, encoder):
    from kexue.models.pretrained import embed

    model, tok = encoder
    out = save_encoder(tmp_path / "fla", model, tok, pooling="first-last-avg")
    assert not (out / "modules.json").exists()
    assert torch.allclose(kexue.load(out).embed(texts), embed(model, tok, texts, pooling="first-last-avg"), atol=1e-6)
