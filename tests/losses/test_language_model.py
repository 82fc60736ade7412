"""Language-model cross-entropies (:mod:`kexue.losses.language_model`) against transformers' own losses on the
same logits: ``GPT2LMHeadModel(labels=...)`` for :func:`next_token_loss`, ``BertForMaskedLM(labels=...)`` for
:func:`masked_lm_loss` (1e-5), full and selected-position logits alike; the per-token and summed forms
against transformers' loss functions; and every trainer's / scorer's loss in kexue through them."""
import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from kexue.losses import IGNORE, masked_lm_loss, next_token_loss, next_token_positions

VOCAB = 97


def padded_ids(g: torch.Generator, rows: int = 5, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids right-padded with 0 to lengths that vary by row, and the attention mask."""
    ids = torch.randint(1, VOCAB, (rows, length), generator=g)
    lengths = torch.tensor([length, length - 3, 4, length - 1, 2])[:rows]
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()


@pytest.fixture(scope="module")
def bert_mlm():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=32)).eval()


def rel(a, b) -> float:
    return abs(float(a) - float(b)) / abs(float(b))


@pytest.mark.parametrize("which", ["all real tokens", "a target segment"])
def test_next_token_loss_equals_gpt2_lm_head_loss(gpt2, which):
    g = torch.Generator().manual_seed(1)
    ids, mask = padded_ids(g)
    loss_mask = mask.bool()
    if which == "a target segment":  # UniLM-style: only the tokens from position 3 on are predicted
        loss_mask &= torch.arange(ids.shape[1])[None, :] >= 3
    labels = ids.masked_fill(~loss_mask, IGNORE)
    with torch.no_grad():
        out = gpt2(input_ids=ids, attention_mask=mask, labels=labels)
    ours = next_token_loss(out.logits, ids, loss_mask)
    assert rel(ours, out.loss) <= 1e-5
    # the same number from the logits at the predicting positions only (the model's logits_mask)
    picked = next_token_positions(loss_mask)
    assert picked.sum() == loss_mask[:, 1:].sum() and not picked[:, -1].any()
    assert torch.equal(next_token_loss(out.logits[picked], ids, loss_mask), ours)
    # sum and per-token forms: transformers' loss function summed, and the token layout of the mask
    total = ForCausalLMLoss(out.logits, labels, VOCAB, num_items_in_batch=1)
    assert rel(next_token_loss(out.logits, ids, loss_mask, "sum"), total) <= 1e-5
    per_token = next_token_loss(out.logits, ids, loss_mask, "none")
    assert per_token.shape == ids.shape and (per_token[~loss_mask] == 0).all() and (per_token[:, 0] == 0).all()
    logp = out.logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    assert torch.allclose(per_token[:, 1:], -logp * loss_mask[:, 1:], atol=1e-6)
    assert torch.allclose(per_token.sum(), next_token_loss(out.logits, ids, loss_mask, "sum"), rtol=1e-6)


def test_next_token_loss_default_mask_is_every_next_token(gpt2):
    ids = torch.randint(1, VOCAB, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = gpt2(input_ids=ids, labels=ids)
    assert rel(next_token_loss(out.logits, ids), out.loss) <= 1e-5


def test_masked_lm_loss_equals_bert_for_masked_lm_loss(bert_mlm):
    g = torch.Generator().manual_seed(3)
    ids, mask = padded_ids(g)
    chosen = (torch.rand(ids.shape, generator=g) < 0.3) & mask.bool()
    labels = ids.masked_fill(~chosen, IGNORE)
    with torch.no_grad():
        out = bert_mlm(input_ids=ids, attention_mask=mask, labels=labels)
    ours = masked_lm_loss(out.logits, labels)
    assert rel(ours, out.loss) <= 1e-5
    picked = labels != IGNORE
    assert torch.equal(masked_lm_loss(out.logits[picked], labels), ours)  # logits_mask rows
    per_token = masked_lm_loss(out.logits, labels, "none")
    assert per_token.shape == ids.shape and (per_token[~picked] == 0).all()
    assert torch.allclose(per_token.sum() / picked.sum(), ours, rtol=1e-6)


def test_nothing_to_predict_is_zero_not_nan(gpt2, bert_mlm):
    ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(4))
    logits = torch.randn(2, 6, VOCAB, requires_grad=True)
    none = torch.zeros_like(ids, dtype=torch.bool)
    assert next_token_loss(logits, ids, none).item() == 0.0
    assert masked_lm_loss(logits, torch.full_like(ids, IGNORE)).item() == 0.0
    assert masked_lm_loss(logits[:0].flatten(0, 1), torch.full_like(ids, IGNORE)).item() == 0.0
    masked_lm_loss(logits, torch.full_like(ids, IGNORE)).backward()  # a zero with a graph
    assert (logits.grad == 0).all()


def test_bad_input_is_named():
    ids = torch.randint(1, VOCAB, (2, 6))
    logits = torch.randn(2, 6, VOCAB)
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        next_token_loss(logits, ids, reduction="avg")
    with pytest.raises(ValueError, match="loss_mask"):
        next_token_loss(logits, ids, torch.ones(2, 5))
    with pytest.raises(ValueError, match="do not match the tokens"):
        masked_lm_loss(logits[:, :5], ids)
    with pytest.raises(ValueError, match="logits_mask"):
        next_token_loss(logits[0], ids)  # 6 rows for 10 predicted tokens
    with pytest.raises(ValueError, match="logits must be"):
        masked_lm_loss(logits[0, 0], ids)


def test_old_seq2seq_names_still_work():
    from kexue.losses.seq2seq import seq2seq_loss, target_loss, target_positions

    ids = torch.randint(1, VOCAB, (3, 8), generator=torch.Generator().manual_seed(5))
    segs = (torch.arange(8)[None, :] >= 4).long().expand(3, -1)
    logits = torch.randn(3, 8, VOCAB, generator=torch.Generator().manual_seed(6))
    want = next_token_loss(logits, ids, segs)
    assert torch.equal(seq2seq_loss(logits, ids, segs), want)
    positions = target_positions(segs)
    assert torch.equal(target_loss(logits[positions], ids, positions), want)


def test_recipe_losses_are_the_transformers_convention():
    """dialogue replies, poem per-sequence NLL, reading targets: each equals transformers' causal-LM loss with
    the non-predicted tokens labelled -100."""
    from families_common import tiny, tokenizer

    from kexue.recipes import dialogue, poem, reading

    tok = tokenizer()
    lm = tiny("roformer", "lm", with_mlm=True)
    turns = [["今天天气很好", "是啊出去走走吧", "好"], ["你好", "你好呀"]]
    encoded = [dialogue.encode(tok, t, 32) for t in turns]
    with torch.no_grad():
        mean, count = dialogue.response_loss(lm, tok, encoded)
        total, _ = dialogue.response_loss(lm, tok, encoded, reduction="sum")
        batch = dialogue.pad(encoded, tok.pad_id)
        logits = lm(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).logits
    ids = batch["input_ids"]
    reply = torch.zeros_like(ids, dtype=torch.bool)  # tokens after the first [SEP], real ones only
    for r, (row, segs) in enumerate(encoded):
        first_sep = row.index(tok.sep_id)
        reply[r, first_sep + 1:len(row)] = True
    labels = ids.masked_fill(~reply, IGNORE)
    assert count == int(reply.sum()) and rel(mean, ForCausalLMLoss(logits, labels, logits.shape[-1])) <= 1e-5
    assert rel(total, ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=1)) <= 1e-5

    cond = poem.ConditionalLM(tiny("roformer", "lm", with_mlm=True, cond_dim=8), 2, 8).eval()
    batch = tok.encode_batch(["床前明月光", "春眠不觉晓处处闻啼鸟"], maxlen=16)
    label = torch.tensor([0, 1])
    with torch.no_grad():
        nll = poem.token_nll(cond, batch, label)
        logits = cond(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], label=label).logits
    for r in range(2):
        labels = batch["input_ids"][r:r + 1].masked_fill(batch["attention_mask"][r:r + 1] == 0, IGNORE)
        assert rel(nll[r], ForCausalLMLoss(logits[r:r + 1], labels, logits.shape[-1], num_items_in_batch=1)) <= 1e-5

    unilm = tiny("bert", "unilm", with_mlm=True)
    chunk = [(tok.encode("问题", "文章")[0], tok.encode("答案")[0][1:]), (tok.encode("问", "文")[0], [tok.sep_id])]
    with torch.no_grad():
        ours = reading.seq2seq_loss(unilm, tok, chunk)
        batch = reading.pad([(s + t, [0] * len(s) + [1] * len(t)) for s, t in chunk], tok.pad_id)
        logits = unilm(batch["input_ids"], batch["segment_ids"], batch["attention_mask"]).logits
    labels = batch["input_ids"].masked_fill(batch["segment_ids"] == 0, IGNORE)
    assert rel(ours, ForCausalLMLoss(logits, labels, logits.shape[-1])) <= 1e-5
