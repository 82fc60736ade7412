"""TEMPORARY top-k sampler for the generation recipes (poem, dialogue), until ``kexue.generation``
(the project's decoder, with KV cache and beam search) lands on main; then the recipes switch to it.

y_t ~ top-k(softmax(logits_t / T)): recomputes the full prefix each step (no cache), fine for the
short outputs of the recipes.
"""
from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def sample(model, ids: list[int], segs: list[int], new_seg: int, end_id: int, max_new: int = 64, top_k: int = 8,
           temperature: float = 1.0, cond: Tensor | None = None, banned: list[int] = (),
           generator: torch.Generator | None = None) -> list[int]:
    """Continue ``ids`` (segment ids ``segs``) with tokens of segment ``new_seg`` until ``end_id``."""
    ids, segs, out = list(ids), list(segs), []
    for _ in range(max_new):
        x = torch.tensor([ids])
        logits = model(x, torch.tensor([segs]), torch.ones_like(x), cond=cond).logits[0, -1] / temperature
        logits[list(banned)] = float("-inf")
        top = logits.topk(top_k)
        token = int(top.indices[torch.multinomial(top.values.softmax(-1), 1, generator=generator)])
        if token == end_id:
            break
        out.append(token)
        ids.append(token)
        segs.append(new_seg)
    return out
