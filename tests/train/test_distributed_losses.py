"""In-batch losses over processes: 2 torchrun/gloo processes, each holding a slice of the batch (uneven
slices included) and calling the loss with ``gather=True``, compute exactly the loss and the DDP-averaged
gradients of one process holding the global batch — for CoSENT (vectors and cross-encoder), SimBERT's
contrastive loss, SimCSE (both forms) and InfoNCE with hard negatives; and ``fit`` with sharded batches
ends with the one-process weights. Adversarial training runs under DDP with the ranks kept in step."""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from kexue.train import fit
from kexue.train.state import load_state

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

CASES = textwrap.dedent('''
    import torch
    from torch import nn
    from kexue.losses import cosent_cross_encoder_loss, cosent_loss, infonce_loss, simbert_contrastive_loss, simcse_loss

    N = 8  # global batch; the two ranks hold 3 and 5 rows (SimBERT: 6 and 10 interleaved rows)

    def data():
        g = torch.Generator().manual_seed(7)
        r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # fp64: a sharp comparison
        return {"a": r(N, 6), "b": r(N, 6), "labels": torch.randint(0, 3, (N,), generator=g).double(),
                "pairs": r(2 * N, 6), "noise": 0.1 * r(N, 6), "neg": r(N, 2, 6)}

    LOSSES = {
        "cosent": lambda m, d, g: cosent_loss(m["enc"](d["a"]), m["enc"](d["b"]), d["labels"], gather=g),
        "cosent_cross_encoder": lambda m, d, g: cosent_cross_encoder_loss(
            m["head"](torch.tanh(torch.cat([m["enc"](d["a"]), m["enc"](d["b"])], -1))).squeeze(-1), d["labels"],
            gather=g),
        "simbert": lambda m, d, g: simbert_contrastive_loss(m["enc"](d["pairs"]), gather=g),
        "simcse_post": lambda m, d, g: simcse_loss(m["enc"](d["a"]), m["enc"](d["a"] + d["noise"]), gather=g),
        "simcse_paper": lambda m, d, g: simcse_loss(m["enc"](d["a"]), m["enc"](d["a"] + d["noise"]), form="paper",
                                                    gather=g),
        "infonce_negatives": lambda m, d, g: infonce_loss(m["enc"](d["a"]), m["enc"](d["b"]),
                                                          m["enc"](d["neg"]), gather=g),
    }

    class Net(nn.Module):
        """The loss inside ``forward``, so that a DDP wrapper runs it (DDP averages only what it forwards)."""
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.enc, self.head = nn.Linear(6, 8), nn.Linear(16, 1)
            self.double()
        def __getitem__(self, key):
            return getattr(self, key)
        def forward(self, name, d, gather):
            return LOSSES[name](self, d, gather)

    def slice_for(d, rank, world):
        if world == 1:
            return d
        cut = {"pairs": 6}.get  # rank 0 holds the first rows, rank 1 the rest
        return {k: (v[:cut(k, 3)] if rank == 0 else v[cut(k, 3):]) for k, v in d.items()}
''')

WORKER = CASES + textwrap.dedent('''
    import sys
    from kexue.train import fit, init_distributed
    from kexue.train.state import save_state
    torch.set_num_threads(1)
    rank, world = init_distributed()
    out = {}
    for name in LOSSES:
        net = Net()
        ddp = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True) if world > 1 else net  # head: one case
        loss = ddp(name, slice_for(data(), rank, world), True)
        loss.backward()
        out[name] = {"loss": loss.detach(), "grads": {k: p.grad for k, p in net.named_parameters()}}
    save_state(out, f"{sys.argv[1]}/rank{rank}.safetensors")
    # fit: global tensor batches, sharded by fit over the ranks, InfoNCE over the gathered batch
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8)).double()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randn(8, 6, generator=g, dtype=torch.float64))
               for _ in range(6)]
    fit(enc, lambda m, b: infonce_loss(m(b[0]), m(b[1]), gather=True), batches,
        optimizer=torch.optim.Adam(enc.parameters(), lr=1e-2), checkpoint_dir=f"{sys.argv[1]}/fit", progress=False)
    # adversarial training under DDP: probe passes under no_sync, one synchronised backward per step
    from kexue.train import FGM, PGD, VAT, GradientPenalty
    tables = {}
    for adv in (FGM(include_clean=True, embedding="0"), PGD(embedding="0"), VAT(lambda m, b: m(b[0]), embedding="0"),
                GradientPenalty(embedding="0")):
        torch.manual_seed(0)
        clf = nn.Sequential(nn.Embedding(20, 6), nn.Flatten(), nn.Linear(30, 3)).double()
        g = torch.Generator().manual_seed(2)
        data = [(torch.randint(0, 20, (4, 5), generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(3)]
        fit(clf, lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), data, adversarial=adv,
            optimizer=torch.optim.SGD(clf.parameters(), lr=0.1), grad_accum=1, progress=False)
        tables[type(adv).__name__] = {k: v.detach() for k, v in clf.state_dict().items()}
    save_state(tables, f"{sys.argv[1]}/adversarial{rank}.safetensors")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
''')


def test_two_processes_equal_one_for_every_in_batch_loss(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), str(tmp_path)],
                         env=ENV, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-4000:]
    ranks = [load_state(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    ns: dict = {}
    exec(CASES, ns)  # the same losses and data, in this one process with the global batch
    worst = {}
    for name in ns["LOSSES"]:
        net = ns["Net"]()
        loss = net(name, ns["data"](), False)
        loss.backward()
        diffs = [abs(r[name]["loss"].item() - loss.item()) for r in ranks]
        for k, p in net.named_parameters():
            for r in ranks:
                g = r[name]["grads"][k]
                assert (g is None) == (p.grad is None), (name, k)
                if g is not None:
                    diffs.append((g - p.grad).abs().max().item())
        assert net.enc.weight.grad.abs().max() > 1e-3 and loss.item() > 1e-3  # a real loss and gradient
        worst[name] = max(diffs)
    print("2 processes vs 1, max |diff| of loss and gradients:", {k: f"{v:.1e}" for k, v in worst.items()})
    assert max(worst.values()) <= 1e-6, worst
    # fit with sharded tensor batches and the gathered InfoNCE == one process
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8)).double()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randn(8, 6, generator=g, dtype=torch.float64))
               for _ in range(6)]
    history = fit(enc, lambda m, b: ns["infonce_loss"](m(b[0]), m(b[1]), gather=True), batches,
                  optimizer=torch.optim.Adam(enc.parameters(), lr=1e-2), progress=False)
    two = load_state(tmp_path / "fit" / "state.safetensors")
    assert two["progress"]["step"] == 6
    fit_diff = max((two["model"][k] - v).abs().max().item() for k, v in enc.state_dict().items())
    loss_diff = max(abs(a - b) for a, b in zip(two["history"]["loss"], history["loss"]))
    print(f"fit, 2 processes vs 1: max |weight diff| {fit_diff:.1e}, max |loss diff| {loss_diff:.1e}")
    assert fit_diff <= 1e-6 and loss_diff <= 1e-6
    # adversarial training ran under DDP and left the ranks' weights identical
    adv = [load_state(tmp_path / f"adversarial{r}.safetensors") for r in range(2)]
    assert sorted(adv[0]) == ["FGM", "GradientPenalty", "PGD", "VAT"]
    for name, weights in adv[0].items():
        for k, v in weights.items():
            assert torch.equal(v, adv[1][name][k]), (name, k)
