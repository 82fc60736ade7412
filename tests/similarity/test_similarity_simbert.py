"""SimBERT objective on a tiny model: [CLS] sees only the source, losses finite, sampling and re-ranking."""
import pytest
import torch

from kexue.data import shipped as datasets
from kexue.similarity.simbert import SimBERT, pair_auc


@pytest.fixture(scope="module")
def tiny():
    pairs = [(p.a, p.b) for p in datasets.sts_zh("train")[:200] if p.score >= 4][:16]
    sb = SimBERT.small([s for p in pairs for s in p], hidden=32, layers=2, heads=2, maxlen=32)
    return sb, pairs


def test_cls_sees_only_the_source(tiny):
    sb, pairs = tiny
    sb.model.eval()
    batch = sb.batch(pairs[:3])
    with torch.no_grad():
        out = sb.model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
    # sample 2k is (a_k -> b_k): its pooled [CLS] must equal encode(a_k) exactly (UniLM prefix mask).
    enc = sb.encode([a for a, _ in pairs[:3]])
    cls = torch.nn.functional.normalize(out.pooled[0::2], dim=-1)
    assert torch.allclose(cls, enc, atol=1e-5)


def test_fit_and_generate(tiny):
    sb, pairs = tiny
    hist = sb.fit(pairs, max_steps=3, batch_size=8, progress=False)
    assert len(hist) == 3 and all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in hist)
    cands = sb.sample(pairs[0][0], n=3, topk=5, max_new=6, seed=0)
    assert len(cands) == 3 and all(isinstance(c, str) for c in cands)
    ranked = sb.generate_similar(pairs[0][0], n=4, topp=0.9, seed=0)
    sims = [s for _, s in ranked]
    assert sims == sorted(sims, reverse=True)
    assert 0.0 <= pair_auc(sb, pairs) <= 1.0


def test_bad_input(tiny):
    sb, _ = tiny
    with pytest.raises(ValueError, match="empty string"):
        sb.encode(["好", ""])
    with pytest.raises(ValueError, match=r"pairs\[1\] is not an \(a, b\) pair"):
        pair_auc(sb, [("a", "b"), ("c",)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty string"):
        sb.fit([("a", "b"), ("c", " ")], max_steps=1)


def test_from_checkpoint_keeps_every_stored_weight_and_says_the_pooler_is_new(capsys, tmp_path):
    """SimBERT from kexue-zh-mini: each encoder / MLM weight equals the file's (read by safetensors itself),
    the missing pooler is reported, and a checkpoint that does not fit is refused by name."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from kexue.models.checkpoints import save_pretrained
    from kexue.models.weights import CheckpointError
    from kexue.models.pretrained import zh_mini_path

    sb = SimBERT.from_checkpoint(zh_mini_path(), maxlen=32)
    assert "pooler" in capsys.readouterr().out
    stored = load_file(str(zh_mini_path() / "model.safetensors"))
    save_pretrained(sb.model, tmp_path / "saved")  # kexue's weight map back to the HF names
    saved = load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert set(stored) <= set(saved) and {k for k in saved if k not in stored} == {
        "roformer.pooler.dense.weight", "roformer.pooler.dense.bias"}
    for k in stored:
        assert torch.equal(saved[k].float(), stored[k].float()), k
    assert sb.model.application == "unilm" and sb.tokenizer.vocab_size == json.loads(
        (zh_mini_path() / "config.json").read_text())["vocab_size"]
    bad = tmp_path / "bad"
    shutil.copytree(zh_mini_path(), bad)
    key = next(k for k in stored if k.endswith("attention.self.query.weight"))
    save_file({**stored, key: stored[key][:, :-1].contiguous()}, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="query"):
        SimBERT.from_checkpoint(bad)
