"""The fit loop: gradient accumulation == one big batch; kill -9 + resume == uninterrupted;
2-process torchrun/gloo DDP == 1 process with the same global batch."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from torch import nn

from kexue.train.loop import fit
from kexue.train.state import load_state

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def test_grad_accumulation_equals_big_batch():
    g = torch.Generator().manual_seed(0)
    big = [(torch.randn(16, 5, generator=g), torch.randn(16, 2, generator=g)) for _ in range(6)]
    micro = [(x[i:i + 4], y[i:i + 4]) for x, y in big for i in range(0, 16, 4)]
    models = []
    for data, k in ((big, 1), (micro, 4)):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 2))
        fit(m, _loss, data, optimizer=torch.optim.AdamW(m.parameters(), lr=1e-2), grad_accum=k,
            clip_norm=0.5, progress=False)
        models.append(m)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert (p - q).abs().max().item() <= 1e-6


WORKER = textwrap.dedent('''
    import sys, time, torch
    from torch import nn
    from kexue.io import write_text
    from kexue.train import fit
    from kexue.optim import EMA, WarmupLinear, lambda_lr
    torch.set_num_threads(1)
    out, pause_at = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(48, 6), torch.randn(48, 2))
    # the collate function draws from the global RNG, like random masking in MLM
    collate = lambda items: (torch.stack([a for a, _ in items]) + 0.1 * torch.randn(len(items), 6),
                             torch.stack([b for _, b in items]))
    data = torch.utils.data.DataLoader(ds, batch_size=6, shuffle=True, collate_fn=collate)
    model = nn.Sequential(nn.Linear(6, 32), nn.Dropout(0.2), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    def loss_fn(m, b):
        return ((m(b[0]) - b[1]) ** 2).mean()
    def progress(state):
        if state.step == pause_at:  # tell the test where we are (atomically), then wait to be killed
            write_text(out + ".progress", str(state.step))
            time.sleep(600)
    fit(model, loss_fn, data, optimizer=opt, steps=30, scheduler=lambda_lr(opt, WarmupLinear(4, 30)),
        ema=EMA(model, 0.8), grad_accum=2, callbacks=[progress], eval_every=1,
        checkpoint_dir=out, checkpoint_every=3, progress=False, seed=1)
''')


def test_kill_9_and_resume_equals_uninterrupted(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run = lambda d, pause: subprocess.Popen([sys.executable, str(script), str(d), str(pause)], env=ENV)
    a, b = tmp_path / "killed", tmp_path / "straight"
    proc = run(a, 14)  # pauses inside step 14's callback, after the step-12 checkpoint
    progress = Path(str(a) + ".progress")
    deadline = time.time() + 120
    while not progress.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert progress.read_text() == "14"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (a / "model.safetensors").exists()
    assert load_state(a / "state.safetensors")["progress"]["step"] == 12
    assert run(a, -1).wait() == 0  # resume
    assert run(b, -1).wait() == 0  # uninterrupted
    sa, sb = load_state(a / "state.safetensors"), load_state(b / "state.safetensors")
    assert sa["progress"]["step"] == sb["progress"]["step"] == 30
    for part in ("model", "ema"):
        ta, tb = sa[part], sb[part]
        if part == "ema":
            ta, tb = ta["shadow"], tb["shadow"]
        for k in tb:
            assert (ta[k] - tb[k]).abs().max().item() <= 1e-7, (part, k)
    assert sa["history"]["loss"] == sb["history"]["loss"]


DDP_WORKER = textwrap.dedent('''
    import sys, torch
    from torch import nn
    from kexue.train import fit
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 6, generator=g), torch.randn(8, 2, generator=g)) for _ in range(12)]
    world = int(__import__("os").environ.get("WORLD_SIZE", "1"))
    def loss_fn(m, b):
        assert b[0].shape[0] == 8 // world  # each rank really gets its half of the global batch
        return ((m(b[0]) - b[1]) ** 2).mean()
    fit(model, loss_fn, data,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), grad_accum=2, clip_norm=1.0,
        checkpoint_dir=sys.argv[1], progress=False, log_dir=sys.argv[1] + "_tb")
    if torch.distributed.is_initialized():  # a clean shutdown: gloo's threads can abort at interpreter exit
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
''')


def test_ddp_two_processes_equal_one(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(port), str(script),
                          str(tmp_path / "two")], env=ENV, capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    s2, s1 = load_state(tmp_path / "two" / "state.safetensors"), load_state(tmp_path / "one" / "state.safetensors")
    assert s1["progress"]["step"] == s2["progress"]["step"] == 6
    for k in s1["model"]:
        assert (s1["model"][k] - s2["model"][k]).abs().max().item() <= 1e-5, k
    # TensorBoard: rank 0 alone writes one event file, holding its own history (the one checkpointed)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list((tmp_path / "two_tb").iterdir())) == 1
    acc = EventAccumulator(str(tmp_path / "two_tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == \
        [(i + 1, float(torch.tensor(v, dtype=torch.float32))) for i, v in enumerate(s2["history"]["loss"])]
