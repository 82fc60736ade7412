"""Generation picks its decoding state from the family record (``Family.decoding``), never from the
model's attributes: every (family, application) the registry lists decodes with the matching state and,
cached, gives the tokens of a plain loop that re-runs the full forward pass and takes the argmax; every
application that does not decode is refused by name."""
import pytest
import torch

from families_common import prompts, tiny
from generation_common import one_thread  # noqa: F401  (autouse fixture)
from kexue.generation import PrefixDecoding, Seq2SeqDecoding, decoding_state, greedy
from kexue.models import CAUSAL, ENCODER_DECODER, PREFIX, REGISTRY, decoding_kind

CASES = [(name, app) for name, fam in REGISTRY.items() for app in fam.applications]
STEPS = 6


def plain_greedy(model, kind: str, ids: torch.Tensor) -> list[list[int]]:
    """The oracle: no cache, no state; the whole sequence through ``forward`` at every step."""
    with torch.no_grad():
        if kind == ENCODER_DECODER:
            out = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id)
            for _ in range(STEPS):
                out = torch.cat([out, model(ids, out)[:, -1].argmax(-1, keepdim=True)], 1)
            return out[:, 1:].tolist()
        segs = torch.zeros_like(ids) if kind == PREFIX else None
        seq = ids
        for _ in range(STEPS):
            nxt = model(seq, segs).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
            if segs is not None:
                segs = torch.cat([segs, torch.ones_like(nxt)], 1)  # generated tokens are the target segment
        return seq[:, ids.shape[1]:].tolist()


@pytest.mark.parametrize("name,application", CASES)
def test_the_record_chooses_the_decoding(name, application):
    model = tiny(name, application, layers=1, hidden=32)
    kind = REGISTRY[name].decoding.get(application)
    assert decoding_kind(model) == kind
    ids = prompts(2, 5)
    if kind is None:
        with pytest.raises(ValueError, match="application='lm' or 'unilm'"):
            decoding_state(model, ids)
        return
    state = decoding_state(model, ids)
    assert isinstance(state, Seq2SeqDecoding if kind == ENCODER_DECODER else PrefixDecoding)
    if kind != ENCODER_DECODER:
        assert state.unilm == (kind == PREFIX) and kind in (CAUSAL, PREFIX)
    assert greedy(state, STEPS) == plain_greedy(model, kind, ids)


def test_a_model_outside_the_registry_does_not_decode():
    assert decoding_kind(torch.nn.Linear(2, 2)) is None
    with pytest.raises(ValueError, match="decoding needs"):
        decoding_state(torch.nn.Linear(2, 2), prompts(1, 3))
