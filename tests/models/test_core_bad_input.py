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


def test_config_json_that_is_not_utf8_is_named_with_its_line(tmp_path, capsys):
    """build_model, the bert4keras converter's config and a recipe's --checkpoint all name the file and line."""
    import json
    import re

    from kexue.cli import main as cli
    from kexue.models.bert4keras import convert
    from kexue.models.config import ConfigError

    save_pretrained(build_model(TINY), tmp_path)
    text = json.dumps(json.loads((tmp_path / "config.json").read_text(encoding="utf-8")), indent=2)
    (tmp_path / "config.json").write_bytes(text.replace('"bert"', '"b\xe9rt"').encode("latin-1"))
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if '"bert"' in ln)
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'config.json'}:{line}: not UTF-8 text (byte ")):
        build_model(checkpoint=tmp_path)
    b4k = tmp_path / "bert_config.json"
    b4k.write_bytes(b'{\n "hidden_size": 32,\n "x": "\xff"\n}')
    with pytest.raises(ValueError, match=re.escape(f"{b4k}:3: not UTF-8 text")):
        convert(b4k, tmp_path / "nothing", "bert", tmp_path / "out")
    # a recipe fine-tuning a folder whose vocab.txt is not UTF-8: one line naming it
    save_pretrained(build_model(TINY), tmp_path / "ckpt")
    good = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"
    (tmp_path / "ckpt" / "vocab.txt").write_bytes(good + "你".encode("gbk") + b"\n")
    (tmp_path / "train.tsv").write_text("好\tpos\n坏\tneg\n妙\tpos\n差\tneg\n", encoding="utf-8")
    assert cli(["classify", "--train", str(tmp_path / "train.tsv"), "--checkpoint", str(tmp_path / "ckpt"),
                "--out", str(tmp_path / "m"), "--no-progress"]) == 2
    vocab = tmp_path / "ckpt" / "vocab.txt"
    assert capsys.readouterr().err == f"kexue: error: {vocab}:6: not UTF-8 text (byte {len(good)})\n"
