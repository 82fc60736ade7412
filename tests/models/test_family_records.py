"""Every registered family: its ``Family`` record has every field filled, and each field round-trips on a
seeded random model fed real Chinese text (STS-B-zh through kexue-zh-mini's tokenizer): config.json ->
config, the HF weight map, the bert4keras TF names (through the converter's reader), the tokenizer of a
saved folder, and save_pretrained -> build_model (equal tensors and outputs). The HF layouts themselves
are checked against transformers in test_family_roundtrip.py and the TF names against bert4keras in
test_bert4keras_models.py; here every record is checked whole, so a new family cannot leave a field out."""
import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from families_common import encoder_batch, sentences, tiny, tokenizer
from kexue.models import REGISTRY, Family, Transformer, build_model
from kexue.models.bert4keras import IGNORED, MODELS, convert_config, state_from_tf
from kexue.models.checkpoints import save_pretrained
from kexue.models.family import DECODING_KINDS, MODEL_TYPES
from kexue.models.weights import Bert4kerasNames

torch.set_num_threads(1)
CASES = [(name, app) for name, fam in REGISTRY.items() for app in fam.applications]


def _rich(name: str, application: str, **opts):
    """A seeded model of the family with every tensor its options can add, all parameters random
    (a weight map that swapped two tensors would show)."""
    model_cls = REGISTRY[name].model
    if issubclass(model_cls, Transformer):
        opts["with_mlm"] = True
        if model_cls.has_pooler:
            opts["with_pool"] = True
        if model_cls.conditional_norm:
            opts.update(cond_dim=4, cond_hidden=3)
    model = tiny(name, application, **opts)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _outputs(model, batch):
    with torch.no_grad():
        if REGISTRY[model.options.family].decoding.get(model.application) == "encoder-decoder":
            return model(batch["input_ids"], batch["input_ids"][:, :5], batch["attention_mask"])
        cond = torch.linspace(-1, 1, 2 * 4).view(2, 4) if model.cond_dim else None
        out = model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"], cond=cond)
        return out.logits if out.logits is not None else out.hidden


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_field_of_the_record_is_filled(name):
    fam = REGISTRY[name]
    for field in dataclasses.fields(Family):
        value = getattr(fam, field.name)
        assert value is not None, f"{name}: Family.{field.name} is empty"
        if isinstance(value, (str, tuple, dict)):
            # decoding may be empty only for a family that does not generate (ELECTRA: encoder only)
            generates = field.name != "decoding" or set(fam.applications) != {"encoder"}
            assert len(value) or not generates, f"{name}: Family.{field.name} is empty"
    assert fam.name == name == fam.model.family
    for hook in ("parse_config", "config_to_hf", "weight_map", "tokenizer"):
        assert callable(getattr(fam, hook)), f"{name}: Family.{hook} is not callable"
    assert isinstance(fam.bert4keras, Bert4kerasNames) and fam.bert4keras.models
    assert all(MODELS[m] == name for m in fam.bert4keras.models)
    assert fam.applications and fam.model.default_application in fam.applications
    assert set(fam.decoding) <= set(fam.applications) and set(fam.decoding.values()) <= set(DECODING_KINDS)
    assert all(MODEL_TYPES[t] == name for t in fam.model_types) and MODEL_TYPES[f"kexue_{name}"] == name
    for field, (allowed, why) in fam.refused.items():
        assert isinstance(field, str) and why


def test_a_record_that_contradicts_its_model_is_refused():
    bert = REGISTRY["bert"]
    with pytest.raises(ValueError, match="family"):
        dataclasses.replace(bert, name="roformer")
    with pytest.raises(ValueError, match="decoding"):
        dataclasses.replace(bert, decoding={"seq2seq": "encoder-decoder"})
    with pytest.raises(ValueError, match="decoding"):
        dataclasses.replace(bert, decoding={"lm": "telepathy"})


@pytest.mark.parametrize("name,application", CASES)
def test_record_round_trips(tmp_path, name, application):
    fam = REGISTRY[name]
    model = _rich(name, application)
    own = model.state_dict()

    # config rules: the HF fields written parse back into a config that writes the same fields
    hf = fam.config_to_hf(model)
    assert MODEL_TYPES[hf["model_type"]] == name
    again_cfg = fam.parse_config(hf)
    assert isinstance(again_cfg, fam.config)
    assert fam.config_to_hf(fam.build(again_cfg, model.options)) == hf

    # HF weight map: to_hf then from_hf gives back every tensor
    wm = fam.weight_map(model)
    state, report = wm.from_hf(wm.to_hf())
    assert report.ok
    assert all(torch.equal(state[n], own[n]) for n in state)
    assert {n for names, _ in wm.plan.values() for n in names} == set(state)

    # bert4keras names: every tensor has one TF name, no two share one, and the converter's reader loads them back
    for variant in fam.bert4keras.models:
        b4k = dict(vocab_size=9, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                   hidden_act=["gelu", "linear"] if MODELS[variant] == "t5" else "gelu")
        implied = convert_config(b4k, variant)[1]  # the options a bert4keras checkpoint converts under
        tf_model = _rich(name, application, **implied)
        own = tf_model.state_dict()
        rules = fam.bert4keras.rules(variant)
        tf_names = {}
        for n in own:
            hits = [theirs for ours, theirs in rules if re.fullmatch(ours, n)]
            assert hits, f"{name}/{variant}: no bert4keras name for {n}"
            m = next(re.fullmatch(ours, n) for ours, _ in rules if re.fullmatch(ours, n))
            tf_names[n] = hits[0].format(*(int(g) for g in m.groups()))
        assert len(set(tf_names.values())) == len(tf_names), f"{name}/{variant}: two tensors share a TF name"
        assert not any(re.fullmatch(p, v) for v in tf_names.values() for p in IGNORED)
        embeddings = ("token.weight", "segment.weight", "position.weight", "shared.weight")
        variables = {tf: (own[n].t() if own[n].dim() == 2 and not n.endswith(embeddings) else own[n]).numpy()
                     for n, tf in tf_names.items()}
        loaded = state_from_tf(tf_model, {k: np.ascontiguousarray(v) for k, v in variables.items()}, variant)
        assert set(loaded) == set(own) and all(torch.equal(loaded[n], own[n]) for n in own)
    own = model.state_dict()

    # save_pretrained -> build_model: same class, options, tensors and outputs on real text;
    # the family's tokenizer reads the folder back to the same ids
    tok = tokenizer()
    save_pretrained(model, tmp_path, tokenizer=tok)
    back = build_model(checkpoint=tmp_path).eval()
    assert type(back) is fam.model and back.options == model.options
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), own.values()))
    assert json.loads((tmp_path / "config.json").read_text())["kexue"]["family"] == name
    batch = encoder_batch(sentences(2))
    assert torch.equal(_outputs(back, batch), _outputs(model, batch))
    folder_tok = fam.tokenizer(tmp_path)
    assert folder_tok.vocab == tok.vocab
    for s in sentences(4):
        assert folder_tok.encode(s) == tok.encode(s)


def _diff_hunks(text: str):
    """(file, old-side lines, new-side lines) of every hunk of the guide's ```diff blocks."""
    hunks, path = [], None
    for block in re.findall(r"```diff\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("+++ b/"):
                path = line[6:]
            elif line.startswith("--- a/"):
                continue
            elif line.startswith("@@"):
                hunks.append((path, [], []))
            else:
                old, new = hunks[-1][1], hunks[-1][2]
                if line[:1] in (" ", "-"):
                    old.append(line[1:])
                if line[:1] in (" ", "+"):
                    new.append(line[1:])
    return hunks


def test_the_guide_shows_real_code():
    """docs/adding-a-family.md's diff of the smallest family is the repository's code: each hunk's new side is a
    block of the file as it is, its removed lines are gone, and it adds exactly the family's class and record."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    hunks = _diff_hunks((root / "docs" / "adding-a-family.md").read_text(encoding="utf-8"))
    assert {h[0] for h in hunks} == {"kexue/models/bert.py", "kexue/models/family.py"}
    for path, old, new in hunks:
        lines = (root / path).read_text(encoding="utf-8").splitlines()
        assert any(lines[i:i + len(new)] == new for i in range(len(lines))), f"{path}: a hunk is not in the file"
        assert not any(line in lines for line in set(old) - set(new)), f"{path}: a removed line is still there"
    added = "\n".join(line for _, old, new in hunks for line in new if line not in old)
    assert "class RoFormerV2(RoFormer):" in added and 'Family("roformer_v2", RoFormerV2' in added
