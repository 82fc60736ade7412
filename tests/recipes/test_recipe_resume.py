"""Every recipe killed with ``kill -9`` in the middle of its run and started again with the same command saves
the same model, bit for bit, as an uninterrupted run: the task recipes (with --dev, so the best-epoch weights
kept in the checkpoints resume too), ``pretrain``, ``zh-mini``, ``multimodal``, ``diffusion`` and ``gan``.

The killed run is a subprocess paused right after its second checkpoint and one more update (so the resumed
run replays an update that was lost); the resumed and uninterrupted runs run here."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kexue.cli import main as cli
from kexue.train.state import read_progress
from recipes_common import TASKS, other_command, results, task_command

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

# pauses (sleeps, to be killed) in the k-th update after the n-th checkpoint, where fit takes the gradient norm
PAUSE = '''
import sys, time, torch
import kexue.train.loop as loop
from kexue.io import write_text
marker, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
real_save = loop.save_state
seen = {"saves": 0, "steps": None}
def save_state(state, path):
    real_save(state, path)
    seen["saves"] += 1
    if seen["saves"] == n:
        seen["steps"] = 0
def pausing(real):
    def norm(*a, **kw):
        if seen["steps"] is not None:
            seen["steps"] += 1
            if seen["steps"] == k:
                write_text(marker, "paused")
                time.sleep(600)
        return real(*a, **kw)
    return norm
loop.save_state = save_state
torch.nn.utils.clip_grad_norm_ = pausing(torch.nn.utils.clip_grad_norm_)
torch.nn.utils.get_total_norm = pausing(torch.nn.utils.get_total_norm)
torch.set_num_threads(1)
from kexue.cli import dispatch
sys.exit(dispatch(sys.argv[4:]))
'''


def kill_mid_run(tmp_path, argv, saves=2, steps_after=1):
    """Run ``kexue argv`` in a subprocess and kill -9 it during the update after its ``saves``-th checkpoint."""
    script, marker = tmp_path / "pause.py", tmp_path / "paused"
    script.write_text(PAUSE, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script), str(marker), str(saves), str(steps_after), *argv], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        proc.kill()
        raise AssertionError(f"the run never paused: {proc.communicate()[1][-3000:]!r}")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.stderr.close()


def check_same(tmp_path, argv):
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    # zh-mini keeps its run in --work: here a folder inside --out, which the saved model folder carries along
    command = lambda out: [*argv, "--out", str(out), "--checkpoint-every", "2"] + (  # noqa: E731
        ["--work", str(out / "work")] if argv[0] == "zh-mini" else [])
    kill_mid_run(tmp_path, command(killed))
    assert not (killed / "model.safetensors").exists()  # killed before anything was saved
    run = killed / "work" if argv[0] == "zh-mini" else killed
    assert read_progress(run / "train" / "state.safetensors")["step"] == 4  # its last checkpoint
    torch.set_num_threads(1)
    try:
        assert cli(command(killed)) == 0  # the same command again
        assert cli(command(straight)) == 0  # uninterrupted
    finally:
        torch.set_num_threads(2)
    a, b = results(killed), results(straight)
    assert "model.safetensors" in a and a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"{argv[0]}: {name} differs after kill -9 + resume"
    return a


@pytest.mark.parametrize("name", TASKS)
def test_task_recipe_killed_and_rerun_equals_uninterrupted(files, tmp_path, name):
    got = check_same(tmp_path, task_command(name, files))
    m = got["metrics.json"]
    assert len(m["dev_curve"]) == 3 and m["saved_weights"] == "best"  # three epochs scored, the best saved
    assert m["best"]["step"] == max(m["dev_curve"], key=lambda r: (r[m["dev_metric"]] * (1 if m["dev_metric"] !=
                                                                  "perplexity" else -1), -r["step"]))["step"]


@pytest.mark.parametrize("name", ["pretrain", "zh-mini", "multimodal", "diffusion", "gan"])
def test_other_recipe_killed_and_rerun_equals_uninterrupted(files, tmp_path, name):
    check_same(tmp_path, other_command(name, files))
