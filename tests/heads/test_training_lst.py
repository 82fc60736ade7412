"""Ladder Side-Tuning over kexue's BERT: the backbone gets no gradients and does not change,
the side network trains."""
import torch
from torch import nn

from kexue.heads.ladder_side_tuning import LadderSideNetwork
from kexue.models import build_model
from kexue.train.loop import fit

CFG = dict(model_type="bert", vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
           intermediate_size=64, max_position_embeddings=32, type_vocab_size=2)


def test_lst_backbone_gets_no_gradients():
    torch.manual_seed(0)
    backbone = build_model(CFG)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    lst = LadderSideNetwork(backbone, hidden_size=32, num_layers=4, side_dim=16, heads=2, every=2)
    head = nn.Linear(16, 2)
    model = nn.ModuleDict({"lst": lst, "head": head})
    ids = torch.randint(5, 50, (12, 10))
    mask = torch.ones_like(ids)
    mask[:, 7:] = 0
    labels = torch.randint(0, 2, (12,))
    data = [(ids[i:i + 4], mask[i:i + 4], labels[i:i + 4]) for i in range(0, 12, 4)]
    grads = []

    def loss_fn(m, b):
        s = m["lst"](b[0], attention_mask=b[1])
        loss = nn.functional.cross_entropy(m["head"](s[:, 0]), b[2])
        return loss

    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(not p.requires_grad for p in backbone.parameters())
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    side_before = [p.detach().clone() for p in lst.down.parameters()]
    orig_step = opt.step

    def step(*a, **k):  # inspect gradients at each update
        grads.append([p.grad for p in backbone.parameters()])
        return orig_step(*a, **k)
    opt.step = step
    fit(model, loss_fn, data, optimizer=opt, epochs=2, progress=False)
    assert len(grads) == 6 and all(g is None for gs in grads for g in gs)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(p, q) for p, q in zip(lst.down.parameters(), side_before))
    assert not backbone.training  # kept in eval mode (no dropout) while the side net trains
    assert len(lst.blocks) == 2
