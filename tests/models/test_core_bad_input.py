"""Bad checkpoints and inputs produce clear errors that name the problem."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from kexue.models.checkpoints import CheckpointError, save_pretrained
from kexue.models import build_model
from kexue.models.pretrained import minilm_path
from kexue.text.tokenizer import Tokenizer

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=16)


def test_renamed_weight_is_named(tmp_path):
    save_pretrained(build_model(TINY), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["encoder.layer.1.attention.self.kwery.weight"] = state.pop("encoder.layer.1.attention.self.query.weight")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        build_model(checkpoint=tmp_path)
    msg = str(err.value)
    assert "missing (1): encoder.layer.1.attention.self.query.weight" in msg
    assert "unexpected (1): encoder.layer.1.attention.self.kwery.weight" in msg
    model = build_model(checkpoint=tmp_path, strict=False)  # non-strict loads the rest
    assert model is not None


def test_vocab_size_mismatch_is_clear(tmp_path):
    save_pretrained(build_model(TINY), tmp_path)
    with pytest.raises(CheckpointError, match="vocab_size does not match"):
        build_model({**TINY, "vocab_size": 60}, checkpoint=tmp_path)


def test_bad_config_is_clear():
    with pytest.raises(ValueError, match="not divisible"):
        build_model({**TINY, "num_attention_heads": 5})
    with pytest.raises(ValueError, match="unknown model family"):
        build_model(TINY, family="nope")


def test_overlong_input_refused_by_model_and_truncated_by_tokenizer():
    model = build_model(TINY).eval()
    with pytest.raises(ValueError, match="exceeds the model's 16 positions"):
        model(torch.ones(1, 17, dtype=torch.long))
    tok = Tokenizer.from_pretrained(minilm_path())
    ids, _ = tok.encode("many words here " * 20, maxlen=16)
    assert len(ids) == 16
    with pytest.raises(ValueError, match="vocab_size=50"):  # a 30522-token vocab on a 50-token model
        model(torch.tensor([ids]))
    model(torch.tensor([ids]) % 50)


def test_decoding_past_the_position_table_is_refused():
    from kexue.generation import generate
    lm = build_model(TINY, application="lm", with_mlm=True).eval()
    assert len(generate(lm, torch.randint(5, 50, (1, 10)), max_new_tokens=6)[0]) == 6  # 16 positions: fits
    with pytest.raises(ValueError, match="17 tokens exceeds the model's 16 positions"):
        generate(lm, torch.randint(5, 50, (1, 10)), max_new_tokens=8)


def test_pytorch_bin_checkpoints_load_with_weights_only(tmp_path):
    model = build_model(TINY)
    save_pretrained(model, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    again = build_model(checkpoint=tmp_path)
    for (n, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), n
