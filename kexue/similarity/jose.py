r"""JoSE: joint spherical word and paragraph embeddings ("JoSE：球面上的词向量和句向量";
Meng et al. 2019, "Spherical Text Embedding").

.. math::
    \ell(u, v, d, u') = \max\big(0,\ m - \cos(u, v) - \cos(u, d) + \cos(u', v) + \cos(u', d)\big),
    \qquad \|u\| = \|v\| = \|d\| = 1

Doc2Vec-style: a paragraph is an id ``d`` that co-occurs with every word of it; ``u`` is a centre
word, ``v`` a context word within the window (a second word table), ``u'`` a negative centre word
drawn from the unigram distribution^0.75. All vectors live on the unit sphere, so cos is a dot
product, and training is Riemannian SGD on the sphere:

.. math::
    \mathrm{grad} f(x) = (I - x x^\top)\nabla f(x),\qquad
    x \leftarrow \frac{x - \eta\,(1 + x^\top\nabla f / \|\nabla f\|)\,\mathrm{grad} f(x)}
                      {\|x - \eta\,(1 + x^\top\nabla f / \|\nabla f\|)\,\mathrm{grad} f(x)\|}

The projection keeps only the tangent part of the Euclidean gradient (the radial part cannot
change a unit vector); the factor :math:`1 + x^\top\nabla f/\|\nabla f\|` — the cosine distance between
x and the descent direction −∇f — is the paper's modification: two Euclidean gradients with the
same tangent part but pointing away from x by different angles should not give the same step; the
retraction (renormalisation) brings the point back onto the sphere.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def riemannian_grad(x: Tensor, g: Tensor) -> Tensor:
    """Row-wise projection of Euclidean gradients ``g`` onto the tangent spaces at unit rows ``x``."""
    return g - (g * x).sum(-1, keepdim=True) * x


class RiemannianSGD(torch.optim.Optimizer):
    """SGD on the unit sphere for tables whose *rows* are unit vectors (dense or sparse gradients;
    only rows with a gradient move). ``modified=False`` drops JoSE's cosine-distance factor."""

    def __init__(self, params, lr: float = 0.01, modified: bool = True, eps: float = 1e-12):
        if lr <= 0:
            raise ValueError(f"RiemannianSGD: lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, modified=modified, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.dim() != 2:
                    raise ValueError(f"RiemannianSGD updates [rows, dim] tables, got shape {tuple(p.shape)}")
                if p.grad.is_sparse:
                    g = p.grad.coalesce()
                    rows, grad = g.indices()[0], g.values()
                else:
                    rows = p.grad.abs().sum(1).nonzero().squeeze(1)
                    grad = p.grad[rows]
                x = p[rows]
                step = riemannian_grad(x, grad)
                if group["modified"]:
                    cos_dist = 1 + (x * grad).sum(-1, keepdim=True) / grad.norm(dim=-1, keepdim=True).clamp(min=group["eps"])
                    step = cos_dist * step
                p[rows] = F.normalize(x - group["lr"] * step, dim=-1, eps=group["eps"])
        return loss


def _unit_rows(n: int, dim: int, generator: torch.Generator | None) -> nn.Parameter:
    return nn.Parameter(F.normalize(torch.randn(n, dim, generator=generator), dim=-1))


class JoSE(nn.Module):
    """Three unit-row tables: centre words ``u``, context words ``v``, paragraphs ``d``."""

    def __init__(self, vocab_size: int, n_docs: int, dim: int = 100, margin: float = 0.15, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.center, self.context, self.doc = (_unit_rows(vocab_size, dim, g), _unit_rows(vocab_size, dim, g),
                                               _unit_rows(n_docs, dim, g))
        self.margin = margin

    def loss(self, batch: Tensor) -> Tensor:
        """Summed hinge over ``batch [B, 4]`` = (centre, context, doc, negative centre) ids: summed, so
        ``lr`` is per tuple as in the paper's one-tuple-at-a-time SGD."""
        if batch.dim() != 2 or batch.shape[1] != 4:
            raise ValueError(f"JoSE batch must be [B, 4] (center, context, doc, negative), got {tuple(batch.shape)}")
        u, u_neg = (F.embedding(batch[:, i], self.center, sparse=True) for i in (0, 3))
        v = F.embedding(batch[:, 1], self.context, sparse=True)
        d = F.embedding(batch[:, 2], self.doc, sparse=True)
        pos = (u * v).sum(-1) + (u * d).sum(-1)
        neg = (u_neg * v).sum(-1) + (u_neg * d).sum(-1)
        return F.relu(self.margin - pos + neg).sum()


class Corpus:
    """Tokenised documents -> vocabulary (words with >= ``min_count`` occurrences) and id sequences."""

    def __init__(self, docs: Sequence[Sequence[str]], min_count: int = 2):
        counts = Counter(w for doc in docs for w in doc)
        self.words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if not self.words:
            raise ValueError(f"no word occurs >= min_count={min_count} times")
        self.index = {w: i for i, w in enumerate(self.words)}
        self.docs = [torch.tensor([self.index[w] for w in doc if w in self.index], dtype=torch.long) for doc in docs]
        freq = torch.tensor([counts[w] for w in self.words], dtype=torch.float64)
        self.negative_probs = freq ** 0.75 / (freq ** 0.75).sum()

    def tuples(self, window: int = 5, generator: torch.Generator | None = None) -> Tensor:
        """All (centre, context, doc, negative) tuples of one epoch, shuffled: every ordered word pair
        within ``window`` in each document, one unigram^0.75 negative each."""
        rows = []
        for d, ids in enumerate(self.docs):
            n = len(ids)
            for off in range(1, window + 1):
                if n <= off:
                    break
                for a, b in ((ids[:-off], ids[off:]), (ids[off:], ids[:-off])):  # both directions
                    rows.append(torch.stack([a, b, torch.full_like(a, d)], 1))
        pos = torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.long)
        neg = torch.multinomial(self.negative_probs, len(pos), replacement=True, generator=generator)
        out = torch.cat([pos, neg[:, None]], 1)
        return out[torch.randperm(len(out), generator=generator)]


def train_jose(corpus: Corpus, dim: int = 100, epochs: int = 5, window: int = 5, batch_size: int = 512,
               lr: float = 0.04, margin: float = 0.15, seed: int = 0, progress: bool = False) -> tuple[JoSE, dict]:
    """Train through :func:`kexue.train.fit` with :class:`RiemannianSGD` and a linearly decaying lr."""
    from kexue.train.loop import fit

    model = JoSE(len(corpus.words), len(corpus.docs), dim, margin, seed)
    g = torch.Generator().manual_seed(seed)
    epoch_tuples = [corpus.tuples(window, g) for _ in range(epochs)]

    def batches(epoch: int):
        return list(epoch_tuples[epoch % epochs].split(batch_size))

    steps = sum(len(t.split(batch_size)) for t in epoch_tuples)
    opt = RiemannianSGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(1e-4, 1 - i / steps))
    history = fit(model, lambda m, b: m.loss(b), batches, optimizer=opt, scheduler=sched, steps=steps,
                  progress=progress, seed=seed)
    return model, history


def nearest_words(model: JoSE, corpus: Corpus, word: str, k: int = 8) -> list[tuple[str, float]]:
    """The ``k`` centre-word vectors closest (cosine) to ``word``'s."""
    if word not in corpus.index:
        raise ValueError(f"{word!r} is not in the JoSE vocabulary")
    sims = model.center.detach() @ model.center.detach()[corpus.index[word]]
    top = sims.topk(k + 1).indices.tolist()
    return [(corpus.words[i], float(sims[i])) for i in top if i != corpus.index[word]][:k]
