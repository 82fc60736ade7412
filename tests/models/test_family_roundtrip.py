"""Every family: HF -> kexue -> save_pretrained -> transformers -> kexue, equal outputs (<= 1e-5),
for safetensors, .bin and sharded checkpoints, tied and untied heads, and the T5 v1.1 / mT5 layout
transformers 5 writes (``tie_word_embeddings: true`` and a separate ``lm_head.weight``)."""
import json

import pytest
import torch
import transformers as tf

from kexue.models.checkpoints import save_pretrained, weight_files
from kexue.models import build_model

torch.set_num_threads(1)
BERT = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
GPT2 = dict(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=40, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0)
T5 = dict(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
          relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0)


def _untie(hf, head: str) -> None:
    """Give a head declared tied its own values (what real untied checkpoints hold)."""
    module, name = hf.get_submodule(head.rsplit(".", 1)[0]), head.rsplit(".", 1)[1]
    setattr(module, name, torch.nn.Parameter(torch.randn_like(getattr(module, name)) * 0.3))


def make_hf(variant: str):
    torch.manual_seed(0)
    if variant == "bert":
        return tf.BertForMaskedLM(tf.BertConfig(**BERT))
    if variant == "bert_untied":  # tie_word_embeddings: false
        return tf.BertForMaskedLM(tf.BertConfig(**BERT, tie_word_embeddings=False))
    if variant == "bert_differs":  # config says tied, the checkpoint stores a different decoder
        hf = tf.BertForMaskedLM(tf.BertConfig(**BERT))
        _untie(hf, "cls.predictions.decoder.weight")
        return hf
    if variant == "roformer":
        return tf.RoFormerForMaskedLM(tf.RoFormerConfig(**BERT, embedding_size=32))
    if variant == "roformer_value":
        return tf.RoFormerForMaskedLM(tf.RoFormerConfig(**BERT, embedding_size=32, rotary_value=True))
    if variant == "albert":  # one block shared by both layers, E = 16 -> H = 32
        return tf.AlbertForMaskedLM(tf.AlbertConfig(**BERT, embedding_size=16))
    if variant == "albert_unshared":  # a group per layer: bert4keras's albert_unshared
        return tf.AlbertForMaskedLM(tf.AlbertConfig(**BERT, embedding_size=16, num_hidden_groups=2))
    if variant == "albert_inner":  # one group of two blocks, applied twice
        return tf.AlbertForMaskedLM(tf.AlbertConfig(**BERT, embedding_size=16, inner_group_num=2))
    if variant == "electra":  # the generator
        return tf.ElectraForMaskedLM(tf.ElectraConfig(**BERT, embedding_size=16))
    if variant == "electra_disc":
        return tf.ElectraForPreTraining(tf.ElectraConfig(**BERT, embedding_size=16))
    if variant == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(**GPT2))
    if variant == "gpt2_untied":
        return tf.GPT2LMHeadModel(tf.GPT2Config(**GPT2, tie_word_embeddings=False))
    if variant == "gpt2_scales":
        return tf.GPT2LMHeadModel(tf.GPT2Config(**GPT2, scale_attn_by_inverse_layer_idx=True,
                                                scale_attn_weights=False))
    if variant == "t5":
        return tf.T5ForConditionalGeneration(tf.T5Config(**T5, feed_forward_proj="relu"))
    if variant in ("t5v1_1", "mt5"):
        cls, cfg = ((tf.T5ForConditionalGeneration, tf.T5Config) if variant == "t5v1_1"
                    else (tf.MT5ForConditionalGeneration, tf.MT5Config))
        hf = cls(cfg(**T5, feed_forward_proj="gated-gelu", tie_word_embeddings=False))
        _untie(hf, "lm_head.weight")
        return hf
    raise KeyError(variant)


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 97, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask


def hf_logits(hf, variant):
    ids, mask = _inputs()
    with torch.no_grad():
        if variant.startswith(("t5", "mt5")):
            dec = torch.randint(1, 97, (2, 7), generator=torch.Generator().manual_seed(2))
            return hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        if variant.startswith("gpt2"):
            return hf(input_ids=ids, attention_mask=mask, token_type_ids=ids.flip(1)).logits
        return hf(input_ids=ids, attention_mask=mask, token_type_ids=(ids > 50).long()).logits


def our_logits(model, variant):
    ids, mask = _inputs()
    with torch.no_grad():
        if variant.startswith(("t5", "mt5")):
            dec = torch.randint(1, 97, (2, 7), generator=torch.Generator().manual_seed(2))
            return model(ids, dec, attention_mask=mask)
        if variant.startswith("gpt2"):
            return model(ids, ids.flip(1), mask).logits
        return model(ids, (ids > 50).long(), mask).logits


def close(a, b):
    ids, mask = _inputs()
    if a.shape[:2] == mask.shape:  # compare real tokens only
        a, b = a[mask.bool()], b[mask.bool()]
    return (a - b).abs().max().item()


VARIANTS = ["bert", "bert_untied", "bert_differs", "roformer", "roformer_value", "albert", "albert_unshared",
            "albert_inner", "electra", "electra_disc", "gpt2", "gpt2_untied", "gpt2_scales", "t5", "t5v1_1", "mt5"]
OPTIONS = {"electra_disc": dict(with_discriminator=True)}  # the head an encoder is built with (else the MLM head)
FORMATS = {"safetensors": dict(), "bin": dict(safe_serialization=False),
           "sharded": dict(max_shard_size="20KB"), "sharded_bin": dict(safe_serialization=False, max_shard_size="20KB")}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip(tmp_path, variant, fmt):
    hf = make_hf(variant).eval()
    ref = hf_logits(hf, variant)
    hf.save_pretrained(tmp_path / "hf")
    encoder = not variant.startswith(("gpt2", "t5", "mt5"))
    ours = build_model(checkpoint=tmp_path / "hf", **OPTIONS.get(variant, dict(with_mlm=True) if encoder else {})).eval()
    assert close(our_logits(ours, variant), ref) <= 1e-5
    save_pretrained(ours, tmp_path / "kexue", **FORMATS[fmt])
    files = weight_files(tmp_path / "kexue")
    assert len(files) > 1 if fmt.startswith("sharded") else len(files) == 1
    assert all(f.suffix == (".bin" if "bin" in fmt else ".safetensors") for f in files)
    back = type(hf).from_pretrained(tmp_path / "kexue").eval()
    assert close(hf_logits(back, variant), ref) <= 1e-5
    again = build_model(checkpoint=tmp_path / "kexue").eval()
    assert close(our_logits(again, variant), ref) <= 1e-5
    block = json.loads((tmp_path / "kexue" / "config.json").read_text())["kexue"]
    assert block["family"] == ours.options.family and block["application"] == ours.application


def test_t5_v1_1_head_is_not_overwritten_by_the_embedding(tmp_path):
    """The layout transformers 5 writes for v1.1 / mT5: config says tied, both tensors stored."""
    hf = make_hf("t5v1_1").eval()
    hf.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True
    ours = build_model(checkpoint=tmp_path).eval()
    assert not ours.tied and not torch.equal(ours.lm_head.weight, ours.shared.weight)
    assert close(our_logits(ours, "t5v1_1"), hf_logits(hf, "t5v1_1")) <= 1e-5


def test_roformer_v2_round_trip_through_kexue(tmp_path):
    torch.manual_seed(0)
    model = build_model({**BERT, "model_type": "roformer_v2"}, application="unilm").eval()
    for fmt in FORMATS.values():
        save_pretrained(model, tmp_path, **fmt)
        again = build_model(checkpoint=tmp_path).eval()
        assert again.application == "unilm" and again.with_mlm
        ids, mask = _inputs()
        segs = (torch.arange(9) >= 5).long().expand(2, 9)
        with torch.no_grad():
            assert torch.equal(again(ids, segs, mask).logits, model(ids, segs, mask).logits)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "roformer_v2"


KEXUE_ONLY = [
    ("bert", BERT, dict(with_pool=True, cond_dim=4, cond_hidden=3, cond_hidden_act="tanh")),
    ("bert", {**BERT, "embedding_size": 16}, dict(application="unilm", hierarchical_alpha=0.4)),
    ("roformer", {**BERT, "tie_word_embeddings": False}, dict(application="lm", entropy_train_len=64)),
    ("roformer_v2", BERT, dict(with_mlm=True)),
    ("albert", {**BERT, "embedding_size": 16, "num_hidden_groups": 2}, dict(with_pool=True, cond_dim=4,
                                                                          hierarchical_alpha=0.4)),
    ("nezha", {**BERT, "max_relative_position": 3}, dict(application="unilm", cond_dim=4, entropy_train_len=16)),
    ("electra", {**BERT, "embedding_size": 16}, dict(with_discriminator=True, cond_dim=3)),
    ("gpt", {**BERT, "type_vocab_size": 3}, dict(pre_norm=False, final_norm=False, cond_dim=5)),
    ("gpt", {**GPT2, "model_type": "gpt2", "tie_word_embeddings": False}, dict(rope=True)),
]


@pytest.mark.parametrize("family,cfg,opts", KEXUE_ONLY, ids=lambda x: x if isinstance(x, str) else "")
def test_weight_map_is_its_own_inverse(tmp_path, family, cfg, opts):
    """to_hf then from_hf gives back every tensor, for variants only kexue computes; save/load keeps them."""
    torch.manual_seed(0)
    model = build_model(cfg, family=family, **opts)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    wm = model.weight_map()
    state, report = wm.from_hf(wm.to_hf())
    assert report.ok and set(report.skipped) <= {"cls.predictions.bias", "encoder.embed_positions.weight"}
    own = model.state_dict()
    assert set(state) == {n for names, _ in wm.plan.values() for n in names}
    assert all(torch.equal(state[n], own[n]) for n in state)
    save_pretrained(model, tmp_path, safe_serialization=False, max_shard_size="30KB")
    again = build_model(checkpoint=tmp_path)
    assert again.options == model.options and type(again) is type(model)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), own.values()))
    model_type = json.loads((tmp_path / "config.json").read_text())["model_type"]
    assert model_type == ("roformer_v2" if family == "roformer_v2" else f"kexue_{family}")
