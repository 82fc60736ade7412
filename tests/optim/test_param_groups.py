"""Layer-wise LR decay and parameter-wise multipliers (kexue.optim.param_groups): every family's parameters get
the rate a by-name transcription of the rule gives; the preset's schedule scales each group's own rate (checked
against the closed-form AdamW first update); bad patterns and rates are refused by name."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from kexue.models import REGISTRY, build_model
from kexue.optim import adamw_preset, layerwise_lr_groups
from kexue.optim.schedules import WarmupLinear
from tests.families_common import tiny, tokenizer

RATE, LR = 0.8, 1e-3


def albert4():
    """ALBERT with 4 layers over 2 shared groups (layers 1-2 apply group 0, layers 3-4 group 1)."""
    config = dict(model_type="albert", vocab_size=tokenizer().vocab_size, hidden_size=32, embedding_size=32,
                  num_hidden_layers=4, num_hidden_groups=2, num_attention_heads=4, intermediate_size=64)
    return build_model(config)


def expected_factor(family: str, name: str, model: nn.Module) -> float:
    """The rule written out by parameter name, independently of the models' layer_depths."""
    if family == "t5":
        le, ld = model.config.num_layers, model.config.num_decoder_layers
        top = le + ld
        if re.match(r"(shared|encoder_bias|decoder_bias)\.", name):
            return RATE ** top
        m = re.match(r"encoder_layers\.(\d+)\.", name)
        if m:
            return RATE ** (top - int(m.group(1)) - 1)
        m = re.match(r"decoder_layers\.(\d+)\.", name)
        if m:
            return RATE ** (top - le - int(m.group(1)) - 1)
        return 1.0
    top = model.config.num_hidden_layers
    if family == "albert":
        m = re.match(r"groups\.(\d+)\.", name)
        if m:  # group g serves layers 2g+1, 2g+2: its depth is the highest, 2g+2
            return RATE ** (top - (2 * int(m.group(1)) + 2))
    if re.match(r"(embeddings|token|position|segment)\.", name):
        return RATE ** top
    m = re.match(r"layers\.(\d+)\.", name)
    if m:
        return RATE ** (top - int(m.group(1)) - 1)
    return 1.0


def rates(groups) -> dict[int, float]:
    return {id(p): g["lr"] for g in groups for p in g["params"]}


@pytest.mark.parametrize("family", list(REGISTRY))
def test_layerwise_decay_every_family(family):
    model = albert4() if family == "albert" else tiny(family, layers=3, hidden=32)
    groups = layerwise_lr_groups(model, LR, RATE)
    got = rates(groups)
    names = dict(model.named_parameters())
    assert set(got) == {id(p) for p in names.values()}
    for name, p in names.items():
        assert got[id(p)] == pytest.approx(LR * expected_factor(family, name, model), rel=1e-12), name
    assert len({g["lr"] for g in groups}) == len(groups)  # one group per distinct rate


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = tiny("bert", layers=2, hidden=32)
        self.out = nn.Linear(32, 3)


def test_task_head_full_rate_and_multipliers_multiply():
    model = Head()
    got = rates(layerwise_lr_groups(model, LR, RATE, [("out", 10.0), ("embeddings", 0.5), ("LayerNorm|norm", 2.0)]))
    for name, p in model.named_parameters():
        factor = 1.0 if name.startswith("out.") else expected_factor("bert", name.removeprefix("encoder."),
                                                                     model.encoder)
        factor *= 10.0 if "out" in name else 1.0
        factor *= 0.5 if "embeddings" in name else 1.0
        factor *= 2.0 if re.search("LayerNorm|norm", name) else 1.0
        assert got[id(p)] == pytest.approx(LR * factor, rel=1e-12), name
    # multipliers alone, no decay: bert4keras's parameter-wise rates
    alone = rates(layerwise_lr_groups(model, LR, None, {"out": 3.0}))
    for name, p in model.named_parameters():
        assert alone[id(p)] == pytest.approx(LR * (3.0 if "out" in name else 1.0)), name


def test_frozen_parameters_left_out():
    model = Head()
    model.encoder.embeddings.token.weight.requires_grad_(False)
    ids = rates(layerwise_lr_groups(model, LR, RATE))
    assert id(model.encoder.embeddings.token.weight) not in ids and len(ids) == len(
        [p for p in model.parameters() if p.requires_grad])


def test_refusals_name_the_option():
    model = Head()
    with pytest.raises(ValueError, match=r"pattern 'nothing_here' matches no trainable parameter"):
        layerwise_lr_groups(model, LR, None, [("out", 2.0), ("nothing_here", 2.0)])
    with pytest.raises(ValueError, match=r"pattern '\(' is not a regular expression"):
        layerwise_lr_groups(model, LR, None, [("(", 2.0)])
    with pytest.raises(ValueError, match=r"layer-wise lr decay must be a finite number in \(0, 1\]"):
        layerwise_lr_groups(model, LR, 1.5)
    with pytest.raises(ValueError, match=r"lr multiplier of 'out' must be a finite number > 0"):
        layerwise_lr_groups(model, LR, None, [("out", 0.0)])
    with pytest.raises(ValueError, match="layer-wise lr decay: Linear holds no model whose layers have depths"):
        layerwise_lr_groups(nn.Linear(2, 2), LR, 0.9)


def test_schedule_scales_each_group_closed_form_adamw():
    """Every group follows the preset's warm-up/decay times its own rate: lr_g(t) = LR·m_g·f(t); the first AdamW
    update of each parameter is the closed form -lr_g(t)·(g/(|g|+eps) + wd·θ)."""
    torch.manual_seed(0)
    model = Head()
    groups = layerwise_lr_groups(model, LR, RATE, {"out": 4.0})
    total, warm = 10, 3
    preset = adamw_preset(groups, LR, total, warmup=warm, weight_decay=0.01, schedule="linear")
    assert preset.settings["param_groups"] == [{"lr_multiplier": g["lr_multiplier"], "parameters": len(g["params"])}
                                               for g in groups]
    f = WarmupLinear(warm, total)
    opt, sched = preset.optimizer, preset.scheduler
    for t in range(2):  # t = 0 has lr 0 (linear warm-up from 0): step the schedule once first
        for g, mine in zip(opt.param_groups, groups):
            assert g["lr"] == pytest.approx(LR * mine["lr_multiplier"] * f(t), rel=1e-12)
        if t == 0:
            opt.step()
            sched.step()
    before = {id(p): p.detach().clone() for p in model.parameters()}
    ids = torch.randint(5, 100, (2, 7))
    out = model.out(model.encoder(ids).hidden[:, 0])
    out.square().sum().backward()
    opt.step()
    eps = opt.param_groups[0]["eps"]
    for g in opt.param_groups:
        for p in g["params"]:
            if p.grad is None:
                continue
            want = before[id(p)] - g["lr"] * (p.grad / (p.grad.abs() + eps) + 0.01 * before[id(p)])
            torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-8)
