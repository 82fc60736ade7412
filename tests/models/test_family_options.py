"""kexue options reachable from config.json (saved and reloaded), each against an independent oracle:
post-norm GPT (bert4keras's ``gpt``) = transformers' OpenAI GPT; RoPE GPT = transformers' GPT-NeoX
(sequential residual, full rotary); hierarchical positions and the entropy-invariant scale = HF BERT
with the closed-form position table / query scale; conditional LayerNorm = its formula."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
import transformers as tf

from kexue.models.checkpoints import save_pretrained
from kexue.layers import hierarchical_positions
from kexue.models import build_model, from_state

torch.set_num_threads(1)
BERT = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _ids(b=2, l=12, seed=0):
    return torch.randint(1, 97, (b, l), generator=torch.Generator().manual_seed(seed))


def _reload(model, tmp_path):
    save_pretrained(model, tmp_path)
    again = build_model(checkpoint=tmp_path).eval()
    assert again.options == model.options
    return again


def test_post_norm_gpt_equals_openai_gpt(tmp_path):
    """pre_norm=false, final_norm=false: GPT-1 / bert4keras gpt (embeddings summed without a norm)."""
    torch.manual_seed(0)
    hf = tf.OpenAIGPTLMHeadModel(tf.OpenAIGPTConfig(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=20,
                                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    state = {k.replace("tokens_embed", "wte").replace("positions_embed", "wpe"): v
             for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    cfg = dict(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=20, layer_norm_epsilon=1e-5,
               activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ours = from_state("gpt", cfg, state, pre_norm=False, final_norm=False).eval()
    ids = _ids()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=ids.flip(1)).logits
        assert (ours(ids, ids.flip(1)).logits - ref).abs().max() <= 1e-5
        plain = from_state("gpt", cfg, state, strict=False).eval()  # the GPT-2 (pre-norm) reading differs
        assert (plain(ids).logits - hf(input_ids=ids).logits).abs().max() > 1e-2
    again = _reload(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "kexue_gpt"
    with torch.no_grad():
        assert torch.equal(again(ids).logits, ours(ids).logits)


def test_rope_gpt_equals_gpt_neox(tmp_path):
    torch.manual_seed(0)
    d, h, hd = 32, 4, 8
    cfg = tf.GPTNeoXConfig(vocab_size=97, hidden_size=d, num_hidden_layers=2, num_attention_heads=h,
                           intermediate_size=64, hidden_act="gelu", use_parallel_residual=False,
                           rope_parameters={"rope_theta": 10000.0, "partial_rotary_factor": 1.0, "rope_type": "default"},
                           attention_dropout=0.0, hidden_dropout=0.0, tie_word_embeddings=False)
    hf = tf.GPTNeoXForCausalLM(cfg).eval()
    s = hf.state_dict()
    state = {"wte.weight": s["gpt_neox.embed_in.weight"], "lm_head.weight": s["lm_head.weight"],
             "ln_f.weight": s["gpt_neox.final_layer_norm.weight"], "ln_f.bias": s["gpt_neox.final_layer_norm.bias"]}
    for i in range(2):
        p = f"gpt_neox.layers.{i}."
        w = s[p + "attention.query_key_value.weight"].view(h, 3, hd, d)
        b = s[p + "attention.query_key_value.bias"].view(h, 3, hd)
        state[f"h.{i}.attn.c_attn.weight"] = torch.cat([w[:, j].reshape(d, d).t() for j in range(3)], 1)
        state[f"h.{i}.attn.c_attn.bias"] = torch.cat([b[:, j].reshape(d) for j in range(3)])
        for theirs, ours_name in (("attention.dense", "attn.c_proj"), ("mlp.dense_h_to_4h", "mlp.c_fc"),
                                  ("mlp.dense_4h_to_h", "mlp.c_proj")):
            state[f"h.{i}.{ours_name}.weight"] = s[p + theirs + ".weight"].t()
            state[f"h.{i}.{ours_name}.bias"] = s[p + theirs + ".bias"]
        for theirs, ours_name in (("input_layernorm", "ln_1"), ("post_attention_layernorm", "ln_2")):
            state[f"h.{i}.{ours_name}.weight"] = s[p + theirs + ".weight"]
            state[f"h.{i}.{ours_name}.bias"] = s[p + theirs + ".bias"]
    ours = from_state("gpt", dict(vocab_size=97, n_embd=d, n_layer=2, n_head=h, n_inner=64, n_positions=64,
                                  activation_function="gelu", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False), state, rope=True).eval()
    ids = _ids(l=30)
    with torch.no_grad():
        assert (ours(ids).logits - hf(input_ids=ids).logits).abs().max() <= 1e-5
    again = _reload(ours, tmp_path)
    assert again.position is None and again.options.rope
    with torch.no_grad():
        assert torch.equal(again(ids).logits, ours(ids).logits)


def test_hierarchical_positions_equal_bert_with_the_decomposed_table(tmp_path):
    """bert4keras hierarchical_position=True is alpha 0.4: 16 learned positions reach 256."""
    torch.manual_seed(0)
    ours = build_model(BERT, hierarchical_alpha=0.4).eval()
    assert ours.max_positions() == 256
    hf = tf.BertModel(tf.BertConfig(**{**BERT, "max_position_embeddings": 256}), add_pooling_layer=False).eval()
    state = {k: v for k, v in ours.weight_map().to_hf().items()}
    state["embeddings.position_embeddings.weight"] = hierarchical_positions(
        ours.embeddings.position.weight.detach(), 256, 0.4)
    hf.load_state_dict(state, strict=False)
    ids = _ids(l=70)
    with torch.no_grad():
        assert (ours(ids).hidden - hf(input_ids=ids).last_hidden_state).abs().max() <= 1e-5
    again = _reload(ours, tmp_path)
    assert again.options.hierarchical_alpha == 0.4
    with torch.no_grad():
        assert torch.equal(again(ids).hidden, ours(ids).hidden)


@pytest.mark.parametrize("family", ["bert", "roformer"])
def test_entropy_invariant_scale_equals_scaled_queries(tmp_path, family):
    """Without padding every query sees n = L keys: the scale log L / log N is a query scale."""
    torch.manual_seed(0)
    n_train, length = 8, 12
    ours = build_model({**BERT, "model_type": family}, entropy_train_len=n_train).eval()
    with torch.no_grad():  # peaked attention, so that its scale matters
        for layer in ours.layers:
            layer.attn.q.weight.mul_(10)
            layer.attn.k.weight.mul_(10)
    plain = build_model({**BERT, "model_type": family}).eval()
    plain.load_state_dict(ours.state_dict())
    factor = math.log(length) / math.log(n_train)
    ids = _ids(l=length)
    with torch.no_grad():
        unscaled = plain(ids).hidden
        for layer in plain.layers:
            layer.attn.q.weight.mul_(factor)
            layer.attn.q.bias.mul_(factor)
        assert (ours(ids).hidden - plain(ids).hidden).abs().max() <= 1e-5
        assert (ours(ids).hidden - unscaled).abs().max() > 1e-3  # the option does act
    again = _reload(ours, tmp_path)
    assert again.options.entropy_train_len == n_train
    with torch.no_grad():
        assert torch.equal(again(ids).hidden, ours(ids).hidden)


@pytest.mark.parametrize("act", ["linear", "tanh"])
def test_conditional_layernorm_size_and_hidden_layer(tmp_path, act):
    """γ(c) = γ + W_γ act(W_h c), β(c) = β + W_β act(W_h c) (bert4keras LayerNormalization)."""
    torch.manual_seed(0)
    model = build_model(BERT, application="unilm", cond_dim=6, cond_hidden=5, cond_hidden_act=act).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".cond_" in name:
                p.normal_()
    norm = model.layers[0].attn_norm
    x, c = torch.randn(2, 3, 32), torch.randn(2, 6)
    h = c @ norm.cond_proj.weight.T
    h = torch.tanh(h) if act == "tanh" else h
    gamma = norm.weight + h @ norm.cond_gamma.weight.T
    beta = norm.bias + h @ norm.cond_beta.weight.T
    want = F.layer_norm(x, (32,), eps=1e-12) * gamma[:, None] + beta[:, None]
    assert (norm(x, c) - want).abs().max() <= 1e-5
    again = _reload(model, tmp_path)
    ids = _ids()
    segs = (torch.arange(12) >= 6).long().expand(2, 12)
    with torch.no_grad():
        out = again(ids, segs, cond=c).logits
        assert torch.equal(out, model(ids, segs, cond=c).logits)
        assert (out - again(ids, segs, cond=torch.randn(2, 6)).logits).abs().max() > 1e-3


def test_hierarchical_positions_on_gpt_equal_gpt2_with_the_decomposed_table(tmp_path):
    torch.manual_seed(0)
    cfg = dict(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0,
               attn_pdrop=0.0, model_type="gpt2")
    ours = build_model(cfg, hierarchical_alpha=0.3).eval()
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(**{**cfg, "n_positions": 256})).eval()
    state = ours.weight_map().to_hf()
    state["transformer.wpe.weight"] = hierarchical_positions(ours.position.weight.detach(), 256, 0.3)
    hf.load_state_dict(state, strict=False)
    ids = _ids(l=50)
    with torch.no_grad():
        assert (ours(ids).logits - hf(input_ids=ids).logits).abs().max() <= 1e-5
    again = _reload(ours, tmp_path)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, ours(ids).logits)
