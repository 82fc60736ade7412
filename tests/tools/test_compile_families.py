"""``kexue.tools.quantize.compile_model`` (torch.compile) on random weights of every family: compiled outputs
equal eager ones to 1e-5 (fp32; inductor fuses and reorders sums, nothing else may change).

Compiling on a CPU takes seconds per graph, so the models are one layer deep and each family is
compiled once, for the application that exercises most of it (heads, masks, positions); the decoding
step with its growing KV cache (``dynamic=None``: one recompile with symbolic lengths) is checked on
GPT. Its speed is measured in benchmarks/generation.py.
"""
from __future__ import annotations

import copy

import pytest
import torch

from families_common import encoder_batch, needs_cxx, prompts, sentences, tiny
from kexue.generation import decoding_state, generate
from kexue.tools.quantize import compile_model

# family -> application compiled: UniLM's prefix mask and MLM head, RoFormer's causal LM, RoFormer-v2's
# bias-free encoder, GPT's LM, T5's encoder and decoder, ALBERT's LM, NEZHA's UniLM
COMPILED = {"bert": "unilm", "roformer": "lm", "roformer_v2": "encoder", "gpt": "lm", "t5": "seq2seq",
            "albert": "lm", "nezha": "unilm"}  # ALBERT's shared block, NEZHA's relative attention


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def outputs(model, family: str) -> dict[str, torch.Tensor]:
    """Every tensor the model returns on real text: padded encoder batches, or prompt + segment ids."""
    with torch.inference_mode():
        if family == "t5":
            batch = encoder_batch(sentences(4))
            enc = model.encode(batch["input_ids"], batch["attention_mask"])
            logits = model(batch["input_ids"], prompts(4, 6), batch["attention_mask"])
            return {"encoder": enc, "logits": logits}
        if COMPILED[family] == "encoder":
            batch = encoder_batch(sentences(4))
            out = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])
        else:
            ids = prompts(3, 10)
            segments = None if family == "gpt" else (torch.arange(10) >= 6).long().expand_as(ids)
            out = model(ids, segments)
        return {k: v for k, v in (("hidden", out.hidden), ("logits", out.logits)) if v is not None}


@needs_cxx
@pytest.mark.parametrize("family", list(COMPILED))
def test_compiled_equals_eager(family):
    model = tiny(family, COMPILED[family], layers=1, hidden=32)
    want = outputs(model, family)
    compiled = compile_model(copy.deepcopy(model), dynamic=False)
    got = outputs(compiled, family)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5, msg=lambda m: f"{family} {name}: {m}")


@needs_cxx
def test_compiled_decoding_equals_eager():
    """Logits of the prefill and of every cached step to 1e-5, then the greedy outputs (beam search
    reorders rows and batches them by beams: one more compile, left to the benchmark)."""
    model = tiny("gpt", "lm", layers=1, hidden=32)
    compiled = compile_model(copy.deepcopy(model))
    ids = prompts(2, 8)
    with torch.inference_mode():
        eager, fast = decoding_state(model, ids), decoding_state(compiled, ids)
        want, got = eager.prefill(), fast.prefill()
        for _ in range(5):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            tokens = want.argmax(-1)
            want, got = eager.step(tokens), fast.step(tokens)
    assert generate(compiled, ids, max_new_tokens=6) == generate(model, ids, max_new_tokens=6)
