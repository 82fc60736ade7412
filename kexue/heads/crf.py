"""Linear-chain CRF head with Viterbi decoding (bert4keras's ``ConditionalRandomField``).

《简明条件随机场CRF介绍（附带纯Keras实现）》: with emission scores e_t(y) and transitions T(y', y),
a tag path y_1..y_n scores s(y) = b(y_1) + Σ_t e_t(y_t) + Σ_{t>1} T(y_{t-1}, y_t) + c(y_n) and

    log p(y | x) = s(y) - log Σ_{y'} exp s(y')

where the partition sum is computed by the forward recursion and the best path by Viterbi
(the same recursion in the (max, +) semiring). ``b``/``c`` are start/end transitions.
Sequences are right-padded; ``mask [B, L]`` marks the real steps (the first step must be real).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class CRF(nn.Module):
    """``emissions [B, L, T]`` -> log-likelihood of tags / Viterbi paths."""

    def __init__(self, num_tags: int):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))

    @staticmethod
    def _mask(emissions: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        return mask.bool()

    def path_score(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """s(y) for ``tags [B, L]`` -> ``[B]``."""
        m = self._mask(emissions, mask)
        emit = emissions.gather(-1, tags.unsqueeze(-1)).squeeze(-1)  # [B, L]
        trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # [B, L-1]
        score = self.start[tags[:, 0]] + (emit * m).sum(1) + (trans * (m[:, 1:])).sum(1)
        last = tags.gather(1, (m.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
        return score + self.end[last]

    def log_partition(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """log Σ_y exp s(y) by the forward recursion -> ``[B]``."""
        m = self._mask(emissions, mask)
        alpha = self.start + emissions[:, 0]  # [B, T]
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha[:, :, None] + self.transitions, dim=1) + emissions[:, t]
            alpha = torch.where(m[:, t, None], nxt, alpha)  # padded steps carry alpha through
        return torch.logsumexp(alpha + self.end, dim=-1)

    def log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """log p(tags | x) -> ``[B]``; the training loss is its negative mean."""
        return self.path_score(emissions, tags, mask) - self.log_partition(emissions, mask)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean negative log-likelihood (the loss)."""
        return -self.log_likelihood(emissions, tags, mask).mean()

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> list[list[int]]:
        """Viterbi: the highest-scoring tag path of each sequence (length = its real steps)."""
        m = self._mask(emissions, mask)
        score = self.start + emissions[:, 0]
        back = []
        for t in range(1, emissions.shape[1]):
            cand = score[:, :, None] + self.transitions  # [B, from, to]
            best, idx = cand.max(dim=1)
            nxt = best + emissions[:, t]
            keep = m[:, t, None]
            score = torch.where(keep, nxt, score)
            # on padded steps point every tag at itself so backtracking passes through unchanged
            ident = torch.arange(self.num_tags, device=emissions.device).expand_as(idx)
            back.append(torch.where(keep, idx, ident))
        score = score + self.end
        paths = []
        lengths = m.sum(1).tolist()
        for b in range(emissions.shape[0]):
            tag = int(score[b].argmax())
            path = [tag]
            for ptr in reversed(back):
                tag = int(ptr[b, tag])
                path.append(tag)
            path.reverse()
            paths.append(path[: lengths[b]])
        return paths
