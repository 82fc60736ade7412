"""SimBERT / RoFormer-Sim: L = UniLM seq2seq(a → b) + SimBERT contrastive(v_a, v_b) on [CLS], one model.

《鱼与熊掌兼得：融合检索和生成的SimBERT模型》 and 《SimBERTv2来了！融合检索和生成的RoFormer-Sim模型》.
Each similar pair (a, b) becomes two UniLM samples "[CLS] a [SEP] b [SEP]" and "[CLS] b [SEP] a [SEP]"
placed next to each other in the batch. The UniLM mask lets the source segment see only itself,
so the [CLS] vector of sample (a → b) encodes a alone: the two neighbours' [CLS] vectors are the
pair's sentence vectors, trained with the in-batch contrastive loss (scale 30) while the target
segment learns to generate a paraphrase. ``generate_similar`` samples candidates with top-k /
top-p and re-ranks them by vector similarity; ``encode`` gives the retrieval vectors.
"""
from __future__ import annotations

import random
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue.losses import simbert_contrastive_loss
from kexue.data.batching import index_batches
from kexue.heads.pooling import pool
from kexue.losses.language_model import next_token_loss, next_token_positions
from kexue.models import Transformer, build_model
from kexue.models.config import TransformerConfig
from kexue.text.tokenizer import Tokenizer, build_vocab, pad_batch
from kexue.data.inputs import check_texts, split_pairs


class SimBERT:
    """A UniLM model with MLM head and pooler plus its tokenizer."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer, maxlen: int = 64):
        if model.application != "unilm" or not model.with_mlm:
            raise ValueError("SimBERT needs a model built with application='unilm' and with_mlm=True")
        self.model, self.tokenizer, self.maxlen = model, tokenizer, maxlen
        # the sentence vector: the pooler's output on [CLS] when the model has one, else [CLS] itself
        self.pooling = "pooler" if model.with_pool else "cls"

    @classmethod
    def small(cls, texts: Sequence[str], family: str = "roformer", hidden: int = 256, layers: int = 4,
              heads: int = 4, maxlen: int = 64) -> "SimBERT":
        """A small model from scratch with a character vocabulary built from ``texts`` (no Chinese
        checkpoint ships offline; load a real one with ``SimBERT(build_model(..., checkpoint=...), tok)``)."""
        tok = Tokenizer(build_vocab(check_texts(texts), min_count=1))
        cfg = TransformerConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                num_attention_heads=heads, intermediate_size=4 * hidden,
                                max_position_embeddings=2 * maxlen + 8, hidden_dropout_prob=0.1,
                                attention_probs_dropout_prob=0.1, model_type=family)
        model = build_model(cfg, application="unilm", with_pool=True, with_mlm=True)
        return cls(model, tok, maxlen)

    @classmethod
    def from_checkpoint(cls, path, maxlen: int = 64) -> "SimBERT":
        """Start SimBERT from a pretrained encoder folder (e.g. kexue-zh-mini): its weights and vocabulary,
        application='unilm'. Only the pooler may be missing (MLM-only checkpoints have none); it then starts
        from scratch and the report says so. Anything else missing or mismatched is an error."""
        from kexue.models.checkpoints import load_checkpoint_except

        model = build_model(path, application="unilm", with_pool=True, with_mlm=True)
        load_checkpoint_except(model, path, r"\.pooler\.", "the pooler starts from scratch")
        return cls(model.float(), Tokenizer.from_pretrained(path), maxlen)

    # -- the objective -----------------------------------------------------------------------------
    def batch(self, pairs: Sequence[tuple[str, str]]) -> dict[str, Tensor]:
        """Interleaved UniLM samples: (a_1 → b_1), (b_1 → a_1), (a_2 → b_2), …"""
        enc = []
        for a, b in pairs:
            enc.append(self.tokenizer.encode(a, b, maxlen=2 * self.maxlen))
            enc.append(self.tokenizer.encode(b, a, maxlen=2 * self.maxlen))
        return pad_batch(enc, self.tokenizer.pad_id)

    def loss(self, batch: dict[str, Tensor], scale: float = 30.0, model: nn.Module | None = None) -> tuple[Tensor, Tensor]:
        """(seq2seq cross-entropy on target tokens, contrastive loss on the pooled [CLS] vectors);
        ``model`` defaults to ``self.model`` (pass its DDP wrapper when training on several processes)."""
        device = next(self.model.parameters()).device  # batches follow the model (CPU or GPU)
        ids, seg, mask = (batch[k].to(device) for k in ("input_ids", "segment_ids", "attention_mask"))
        # Predict token t+1 at position t wherever t+1 is a real target token (segment 1); logits only there.
        target = (seg == 1) & (mask == 1)
        out = (model or self.model)(ids, seg, mask, logits_mask=next_token_positions(target))
        seq2seq = next_token_loss(out.logits, ids, target)
        return seq2seq, simbert_contrastive_loss(pool(out, mask, self.pooling), scale)

    def fit(self, pairs: Sequence[tuple[str, str]], seconds: float | None = 180.0, batch_size: int = 32,
            lr: float = 1e-3, max_steps: int | None = None, seed: int = 0, progress: bool = True,
            epochs: int = 20, **fit_options) -> list[dict]:
        """AdamW on the summed loss (warm-up over 50 steps) through :func:`kexue.train.fit`, for ``max_steps``
        (default ``epochs`` shuffled passes over the pairs) or until ``seconds``; returns per-step loss
        records. ``fit_options`` go to ``fit`` (``checkpoint_dir``, ``resume``, ``grad_accum``, ``ema`` ...).
        A batch is not split across torchrun processes (``shard_batches=False``): the contrastive loss needs
        the whole batch's negatives, so every rank computes the same batch and the result equals one process."""
        from kexue.io import fingerprint
        from kexue.optim.preset import adamw_preset
        from kexue.train.loop import fit

        split_pairs(pairs)
        if len(pairs) < 2:
            raise ValueError(f"SimBERT's in-batch contrastive loss needs at least 2 pairs, got {len(pairs)}")
        if batch_size < 2:
            raise ValueError(f"SimBERT's in-batch contrastive loss needs batch_size >= 2, got {batch_size}")
        per_epoch = len(pairs) // batch_size + (len(pairs) % batch_size >= 2)  # batches of >= 2 pairs

        def batches(epoch: int) -> list[list[int]]:  # a lone pair has no in-batch negative: batches of >= 2
            return index_batches(len(pairs), batch_size, seed * 100_003 + epoch, min_size=2)

        def loss_fn(m: nn.Module, idx: list[int]) -> dict:
            s2s, con = self.loss(self.batch([pairs[i] for i in idx]), model=m)
            return {"loss": s2s + con, "seq2seq": s2s.detach(), "contrastive": con.detach()}

        total = max_steps or epochs * per_epoch
        # lr·min(1, (step + 1) / 50): a time budget may end the run anywhere, so no decay
        preset = adamw_preset(self.model.parameters(), lr, total, warmup=50, weight_decay=0.01, schedule="constant",
                              clip_norm=1.0)
        settings = {"data": fingerprint([list(p) for p in pairs]), "batch_size": batch_size, "maxlen": self.maxlen,
                    **fit_options.pop("settings", {})}
        self.model.train()
        try:
            history = fit(self.model, loss_fn, batches, steps=total, max_seconds=seconds, progress=progress,
                          desc="SimBERT", seed=seed, shard_batches=False, **preset.fit_options(settings),
                          **fit_options)
        finally:
            self.model.eval()
        return [{"seq2seq": a, "contrastive": b} for a, b in zip(history["seq2seq"], history["contrastive"])]

    # -- retrieval -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 128) -> Tensor:
        """``[N, hidden]`` L2-normalised [CLS] (pooled) vectors of single sentences."""
        texts = check_texts(texts)
        self.model.eval()
        device = next(self.model.parameters()).device
        out = []
        for s in range(0, len(texts), batch_size):
            batch = pad_batch([self.tokenizer.encode(t, maxlen=self.maxlen) for t in texts[s:s + batch_size]],
                              self.tokenizer.pad_id)
            ids, seg, mask = (batch[k].to(device) for k in ("input_ids", "segment_ids", "attention_mask"))
            out.append(F.normalize(pool(self.model(ids, seg, mask), mask, self.pooling).float(), dim=-1).cpu())
        return torch.cat(out)

    # -- generation ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, text: str, n: int = 8, topk: int | None = 5, topp: float | None = None,
               max_new: int | None = None, temperature: float = 1.0, seed: int | None = None) -> list[str]:
        """n sampled targets for the source "[CLS] text [SEP]" (UniLM decoding with a KV cache,
        :func:`kexue.generation.sample`), each up to its [SEP]."""
        from kexue.generation import decoding_state, sample

        check_texts([text])
        device = next(self.model.parameters()).device
        g = torch.Generator(device).manual_seed(seed) if seed is not None else None
        ids, seg = self.tokenizer.encode(text, maxlen=self.maxlen)
        self.model.eval()
        state = decoding_state(self.model, torch.tensor([ids], device=device),
                               segment_ids=torch.tensor([seg], device=device))
        rows = sample(state, max_new or self.maxlen, eos_id=self.tokenizer.sep_id, n=n, temperature=temperature,
                      top_k=topk, top_p=topp, generator=g)
        return [self.tokenizer.decode(r) for r in rows]

    def generate_similar(self, text: str, n: int = 8, k: int | None = None, topk: int | None = 5,
                         topp: float | None = None, seed: int | None = None,
                         keep_copies: bool = False) -> list[tuple[str, float]]:
        """Sample n candidates, drop duplicates (and copies of ``text``), re-rank by cosine to ``text``.

        Returns up to ``k`` (default all) ``(candidate, cosine)`` pairs, most similar first.
        """
        cands = [c for c in dict.fromkeys(self.sample(text, n, topk, topp, seed=seed)) if c.strip()]
        norm = lambda s: s.replace(" ", "")
        if not keep_copies:
            cands = [c for c in cands if norm(c) != norm(text)]
        if not cands:
            return []
        v = self.encode([text] + cands)
        sims = (v[1:] @ v[0]).tolist()
        ranked = sorted(zip(cands, sims), key=lambda x: -x[1])
        return ranked[:k] if k else ranked


def pair_auc(model: SimBERT, pairs: Sequence[tuple[str, str]], seed: int = 0) -> float:
    """AUC of cos(true pair) vs cos(a_i, b_j) for a random derangement j ≠ i (1 = always ranked above)."""
    a, b = split_pairs(pairs)
    va, vb = model.encode(a), model.encode(b)
    pos = (va * vb).sum(-1)
    perm = list(range(len(pairs)))
    random.Random(seed).shuffle(perm)
    perm = [p if p != i else (i + 1) % len(pairs) for i, p in enumerate(perm)]
    neg = (va * vb[perm]).sum(-1)
    # Mann-Whitney U / (n_pos · n_neg), ties counted half.
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
