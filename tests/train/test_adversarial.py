"""Adversarial training (kexue.train.adversarial) against direct autograd computations of the posts'
formulas, written here without touching the model's table (``torch.func.functional_call``): FGM's
ε·g/‖g‖, PGD's projected steps, VAT's power iteration, the gradient penalty through autograd.grad twice;
the table restored bit-exactly; and ``fit(..., adversarial=...)`` == a hand-written loop."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from kexue.train import FGM, PGD, VAT, GradientPenalty, fit, read_settings
from kexue.train.adversarial import find_embedding

NAME = "embeddings.token.weight"


class Tiny(nn.Module):
    def __init__(self, sparse: bool = False):
        super().__init__()
        self.embeddings = nn.ModuleDict({"token": nn.Embedding(20, 6, sparse=sparse)})
        self.mix, self.out = nn.Linear(6, 6), nn.Linear(6, 3)

    def head(self, e):  # looked-up vectors -> logits
        return self.out(torch.tanh(self.mix(e)).mean(1))

    def forward(self, ids):
        return self.head(self.embeddings["token"](ids))


def tiny(dtype=torch.float64, sparse=False) -> Tiny:
    torch.manual_seed(0)
    return Tiny(sparse).to(dtype)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 20, (4, 5), generator=g), torch.randint(0, 3, (4,), generator=g)


def loss_fn(m, b):
    return F.cross_entropy(m(b[0]), b[1])


def loss_at(m, table, b):
    """The loss with the token table replaced by ``table`` (the model itself untouched)."""
    return F.cross_entropy(functional_call(m, {NAME: table}, (b[0],)), b[1])


def table_grad(m, table, b, fn=None):
    table = table.detach().requires_grad_()
    return torch.autograd.grad((fn or loss_at)(m, table, b), table)[0]


def grads_at(m, table, b) -> dict:
    """∇ of the loss at ``table`` for every parameter (the table's own gradient under NAME)."""
    table = table.detach().requires_grad_()
    others = {n: p for n, p in m.named_parameters() if n != NAME}
    loss = F.cross_entropy(functional_call(m, {**others, NAME: table}, (b[0],)), b[1])
    names = list(others) + [NAME]
    return dict(zip(names, torch.autograd.grad(loss, list(others.values()) + [table])))


def normalize(x):
    return x / (x.norm() + 1e-8)


def model_grads(m) -> dict:
    return {n: p.grad for n, p in m.named_parameters()}


def worst(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("include_clean", [False, True])
def test_fgm_matches_the_formula(include_clean):
    m, b = tiny(), batch()
    w0 = m.embeddings["token"].weight.detach().clone()
    delta = 0.7 * normalize(table_grad(m, w0, b))
    ours = FGM(epsilon=0.7, include_clean=include_clean).perturbation(m, loss_fn, b)
    assert (ours - delta).abs().max() <= 1e-12 and delta.norm() > 0.69
    out = FGM(epsilon=0.7, include_clean=include_clean).step(m, loss_fn, b)
    expect = grads_at(m, w0 + delta, b)
    if include_clean:
        expect = {k: v + grads_at(m, w0, b)[k] for k, v in expect.items()}
    diff = worst(model_grads(m), expect)
    print(f"FGM (include_clean={include_clean}): perturbation {((ours - delta).abs().max()):.1e}, grads {diff:.1e}")
    assert diff <= 1e-12
    assert torch.equal(m.embeddings["token"].weight, w0)  # restored bit-exactly
    assert abs(out["clean_loss"].item() - loss_at(m, w0, b).item()) <= 1e-12
    assert abs(out["adversarial_loss"].item() - loss_at(m, w0 + delta, b).item()) <= 1e-12
    assert out["adversarial_loss"] > out["clean_loss"]  # the attack raised the loss


def test_pgd_projected_steps():
    m, b = tiny(), batch()
    w0 = m.embeddings["token"].weight.detach().clone()
    eps, alpha, steps = 0.5, 0.3, 3
    r = torch.zeros_like(w0)
    projected = 0
    for _ in range(steps):
        r = r + alpha * normalize(table_grad(m, w0 + r, b))
        if r.norm() > eps:
            r, projected = eps * r / r.norm(), projected + 1
    assert projected >= 1  # the projection onto the ε-ball is exercised
    ours = PGD(epsilon=eps, alpha=alpha, steps=steps).perturbation(m, loss_fn, b)
    m.zero_grad()
    PGD(epsilon=eps, alpha=alpha, steps=steps).step(m, loss_fn, b)
    diff = worst(model_grads(m), grads_at(m, w0 + r, b))
    print(f"PGD: perturbation {(ours - r).abs().max():.1e}, grads {diff:.1e}")
    assert (ours - r).abs().max() <= 1e-12 and abs(ours.norm().item() - eps) <= 1e-12
    assert diff <= 1e-12
    assert torch.equal(m.embeddings["token"].weight, w0)


def kl(p_logits, q_logits):
    p, log_p, log_q = p_logits.softmax(-1), p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return (p * (log_p - log_q)).sum(-1).mean()


def test_vat_power_iteration():
    m, b = tiny(), batch()
    w0 = m.embeddings["token"].weight.detach().clone()
    eps, xi, iters = 0.8, 3.0, 2
    target = functional_call(m, {NAME: w0}, (b[0],)).detach()
    kl_at = lambda m_, table, b_: kl(target, functional_call(m_, {NAME: table}, (b_[0],)))
    torch.manual_seed(5)
    d = torch.randn_like(w0)
    for _ in range(iters):
        d = table_grad(m, w0 + xi * normalize(d), b, fn=kl_at)
    delta = eps * normalize(d)
    vat = VAT(lambda m_, b_: m_(b_[0]), epsilon=eps, xi=xi, iters=iters, weight=0.5)
    torch.manual_seed(5)
    ours = vat.perturbation(m, b)
    torch.manual_seed(5)
    out = vat.step(m, loss_fn, b)
    # expected: ∇[L(W) + 0.5·KL(sg[p(W)] ‖ p(W + Δ))]
    table = (w0 + delta).requires_grad_()
    others = {n: p for n, p in m.named_parameters() if n != NAME}
    kl_term = kl(target, functional_call(m, {**others, NAME: table}, (b[0],)))
    g_kl = dict(zip(list(others) + [NAME], torch.autograd.grad(0.5 * kl_term, list(others.values()) + [table])))
    expect = {k: v + g_kl[k] for k, v in grads_at(m, w0, b).items()}
    diff = worst(model_grads(m), expect)
    print(f"VAT: perturbation {(ours - delta).abs().max():.1e}, grads {diff:.1e}")
    assert (ours - delta).abs().max() <= 1e-12 and diff <= 1e-12
    assert abs(out["vat"].item() - kl_term.item()) <= 1e-12 and out["vat"] > 0
    assert torch.equal(m.embeddings["token"].weight, w0)


def test_gradient_penalty_is_autograd_grad_twice():
    m, b = tiny(), batch()
    e = m.embeddings["token"](b[0])
    loss = F.cross_entropy(m.head(e), b[1])
    (g,) = torch.autograd.grad(loss, e, create_graph=True)
    total = loss + 0.5 * 0.3 * g.pow(2).sum()
    expect = dict(zip([n for n, _ in m.named_parameters()], torch.autograd.grad(total, list(m.parameters()))))
    out = GradientPenalty(epsilon=0.3).step(m, loss_fn, b)
    diff = worst(model_grads(m), expect)
    print(f"gradient penalty vs autograd.grad twice: grads {diff:.1e}")
    assert diff <= 1e-12 and abs(out["loss"].item() - total.item()) <= 1e-12
    assert out["gradient_penalty"].item() > 0


def test_restore_is_bit_exact_where_subtracting_is_not():
    m, b = tiny(torch.float32), batch()
    weight = m.embeddings["token"].weight
    w0 = weight.detach().clone()
    delta = FGM(epsilon=1.0).perturbation(m, loss_fn, b)
    assert not torch.equal((w0 + delta) - delta, w0)  # the naive restore leaves rounding errors
    for adv in (FGM(1.0), FGM(1.0, include_clean=True), PGD(), VAT(lambda m_, b_: m_(b_[0])), GradientPenalty()):
        adv.step(m, loss_fn, b)
        assert torch.equal(weight, w0), type(adv).__name__
        assert weight.requires_grad


def test_sparse_and_frozen_tables():
    b = batch()
    dense, sparse = tiny(), tiny(sparse=True)
    assert torch.equal(FGM().perturbation(dense, loss_fn, b), FGM().perturbation(sparse, loss_fn, b))
    frozen = tiny()
    frozen.embeddings["token"].weight.requires_grad_(False)
    assert torch.equal(FGM().perturbation(frozen, loss_fn, b), FGM().perturbation(dense, loss_fn, b))
    FGM(include_clean=True).step(frozen, loss_fn, b)
    assert frozen.embeddings["token"].weight.grad is None and not frozen.embeddings["token"].weight.requires_grad
    GradientPenalty().step(frozen, loss_fn, b)  # the looked-up vectors are still penalised


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_fit_with_fgm_equals_a_hand_written_loop(grad_accum, tmp_path):
    data = [batch(s) for s in range(4)]
    m = tiny()
    history = fit(m, loss_fn, data, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), grad_accum=grad_accum,
                  adversarial=FGM(epsilon=0.5), checkpoint_dir=tmp_path / "run", progress=False)
    ref = tiny()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for i in range(0, len(data), grad_accum):
        grads = None
        for b in data[i:i + grad_accum]:
            w = ref.embeddings["token"].weight.detach()
            g = grads_at(ref, w + 0.5 * normalize(table_grad(ref, w, b)), b)
            grads = g if grads is None else {k: grads[k] + v for k, v in g.items()}
        for n, p in ref.named_parameters():
            p.grad = grads[n] / grad_accum
        opt.step()
    diff = max((p - q).abs().max().item() for p, q in zip(m.parameters(), ref.parameters()))
    print(f"fit(adversarial=FGM, grad_accum={grad_accum}) vs hand-written loop: weights {diff:.1e}")
    assert diff <= 1e-12
    assert len(history["clean_loss"]) == len(history["loss"]) == 4 // grad_accum
    assert read_settings(tmp_path / "run")["adversarial"] == {"class": "FGM", "embedding": None, "epsilon": 0.5,
                                                              "include_clean": False}


def test_kexue_families_and_bad_input():
    from families_common import tiny as family

    bert, gpt = family("bert"), family("gpt")
    assert find_embedding(bert)[0] == "embeddings.token" and find_embedding(gpt)[0] == "token"
    ids = torch.randint(1, 100, (2, 7))

    def lm_loss(m, b):
        return m(b, torch.zeros_like(b), torch.ones_like(b)).hidden.pow(2).mean()

    w0 = bert.embeddings.token.weight.detach().clone()
    for adv in (FGM(), GradientPenalty()):  # through kexue's attention, incl. the double backward
        out = adv.step(bert.train(), lm_loss, ids)
        assert torch.isfinite(out["loss"]) and torch.equal(bert.embeddings.token.weight, w0)
    with pytest.raises(ValueError, match="cannot tell the token table"):
        find_embedding(nn.ModuleDict({"a": nn.Embedding(3, 2), "b": nn.Embedding(3, 2)}))
    with pytest.raises(ValueError, match="not an nn.Embedding"):
        find_embedding(bert, "embeddings.norm")
    assert find_embedding(bert, "embeddings.segment.weight")[0] == "embeddings.segment"
    with pytest.raises(ValueError, match="epsilon"):
        FGM(epsilon=0)
    with pytest.raises(ValueError, match="steps"):
        PGD(steps=0)
    with pytest.raises(ValueError, match="output_fn"):
        VAT(None)
    with pytest.raises(ValueError, match="adversarial must be"):
        fit(tiny(), loss_fn, [batch()], optimizer=torch.optim.SGD(tiny().parameters(), lr=0.1), adversarial="fgm",
            progress=False)
