"""Pull any intermediate out of a model without rebuilding it (《让Keras更酷一些》's promise), by forward hooks.

    with kexue.capture(model, "layers.*.attn.probs", "layers.3.ffn.act", "layers.*") as got:
        model(input_ids)
    got["layers.0.attn.probs"]      # [B, H, L, K]  softmax(s·q kᵀ + mask), per layer and head
    got["layers.3.ffn.act"]         # [B, L, inner]  the FFN activation (input of its down projection)
    got["layers.5"]                 # [B, L, hidden] a layer's output (hidden state)

A name is a module path with ``*`` standing for one path component; it captures that module's
output. Two names reach inside a module:

* ``<attention>.probs``: attention probabilities, computed in the hook from the q, k, mask and scale
  the layer handed to SDPA (after RoPE and the KV cache), only when asked for: SDPA itself never
  forms them. Dropout on the probabilities (training mode) is not included.
* ``<feed-forward>.act``: act(up(x)) (gated: act(gate(x)) ⊙ up(x)), the input of ``down``.

Hooks only read: outputs are unchanged. Tensors are detached; with ``all_calls=True`` every
forward call is kept (a list per name, e.g. one entry per decoding step), otherwise the last one.
"""
from __future__ import annotations

import contextlib
import fnmatch
import io
import sys
import types
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from kexue.layers.attention import MultiHeadAttention
from kexue.layers.ffn import FeedForward

VIRTUAL = {"probs": MultiHeadAttention, "act": FeedForward}


def attention_probs(q: Tensor, k: Tensor, attn_mask: Tensor | None, scale: float) -> Tensor:
    """softmax(scale · q kᵀ + mask): bool masks keep True, float masks are added (SDPA's convention)."""
    logits = (q @ k.transpose(-1, -2)) * scale
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    return logits.softmax(-1)


def _match(pattern: str, name: str) -> bool:
    parts, names = pattern.split("."), name.split(".") if name else []
    return len(parts) == len(names) and all(fnmatch.fnmatchcase(n, p) for p, n in zip(parts, names))


def _detach(x):
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, (tuple, list)):
        return type(x)(_detach(v) for v in x)
    return x


@contextlib.contextmanager
def capture(model: nn.Module, *names: str, all_calls: bool = False) -> Iterator[dict]:
    """Context manager yielding a dict ``expanded name -> captured value``, filled by forward calls
    inside the block (and readable after it). Every name must match something: an unknown name is
    a ValueError that names it."""
    if not names:
        raise ValueError("capture needs at least one name, e.g. 'layers.*.attn.probs'")
    modules = dict(model.named_modules())
    got: dict = {}
    targets: list[tuple[str, nn.Module, str]] = []  # (expanded name, module to hook, what)
    for pattern in names:
        found = [n for n in modules if _match(pattern, n)]
        if found:
            targets += [(n, modules[n], "output") for n in found]
            continue
        head, _, last = pattern.rpartition(".")
        owners = [n for n in modules if last in VIRTUAL and _match(head, n)]
        if not owners:
            raise ValueError(f"capture: {pattern!r} matches no module of {type(model).__name__} "
                             f"(virtual names: {', '.join('<module>.' + v for v in VIRTUAL)})")
        for n in owners:
            if not isinstance(modules[n], VIRTUAL[last]):
                raise ValueError(f"capture: {n + '.' + last!r} needs {n!r} to be a {VIRTUAL[last].__name__}, "
                                 f"it is a {type(modules[n]).__name__}")
            targets.append((f"{n}.{last}", modules[n], last))

    def store(key, value):
        if all_calls:
            got.setdefault(key, []).append(value)
        else:
            got[key] = value

    handles = []
    for key, module, what in targets:
        if what == "output":
            handles.append(module.register_forward_hook(lambda m, a, out, key=key: store(key, _detach(out))))
        elif what == "probs":
            def on_core(m, args, out, key=key):
                q, k, _, mask, _, scale = args
                store(key, attention_probs(q.detach(), k.detach(), mask, scale))
            handles.append(module.core.register_forward_hook(on_core))
        else:  # act: the input of the down projection
            handles.append(module.down.register_forward_pre_hook(lambda m, args, key=key: store(key, args[0].detach())))
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


def plot_attention(probs: Tensor, path: str | Path, tokens: Sequence[str] | None = None,
                   title: str | None = None, cols: int = 4) -> Path:
    """Save attention maps as a PNG heat-map: ``probs [L, K]`` (one map) or ``[H, L, K]`` (a grid,
    one map per head). ``tokens`` label the axes when given (K labels; the last L are the queries)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kexue.io import atomic_write

    probs = probs.detach().float().cpu()
    if probs.dim() == 2:
        probs = probs[None]
    if probs.dim() != 3:
        raise ValueError(f"plot_attention takes [L, K] or [H, L, K] probabilities, got {tuple(probs.shape)}")
    h = probs.shape[0]
    ncol = min(cols, h)
    nrow = -(-h // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.0 * nrow), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= h:
            ax.axis("off")
            continue
        ax.imshow(probs[i].numpy(), cmap="viridis", aspect="auto", interpolation="nearest")
        ax.set_title(f"head {i}" if h > 1 else (title or "attention"), fontsize=9)
        if tokens is not None and len(tokens) <= 64:
            k = probs.shape[2]
            ax.set_xticks(range(k), labels=list(tokens)[-k:], fontsize=5, rotation=90)
            ax.set_yticks(range(probs.shape[1]), labels=list(tokens)[-probs.shape[1]:], fontsize=5)
        ax.set_xlabel("key", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
    if title and h > 1:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


class _CallableModule(types.ModuleType):
    """``kexue.tools.capture`` is this module; calling it calls :func:`capture`."""

    def __call__(self, model: nn.Module, *names: str, all_calls: bool = False):
        return capture(model, *names, all_calls=all_calls)


sys.modules[__name__].__class__ = _CallableModule
