"""Shared by the serve tests: tiny models trained by the recipes in seconds, and ``kexue serve``'s app run by
uvicorn in a thread of the test process on 127.0.0.1 (a free port), stopped when the block ends."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import httpx

from kexue.cli import main as cli
from kexue.data.shipped import sts_zh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_dialogue(folder: Path) -> Path:
    assert cli(["dialogue", "--out", str(folder), "--no-progress", "--limit", "16", "--epochs", "1",
                "--maxlen", "48"]) == 0
    return folder


def train_encoder(folder: Path, data: Path) -> Path:
    """``kexue similarity`` (CoSENT, a small RoFormer from scratch) on 32 STS-B-zh pairs."""
    pairs = data / "pairs.tsv"
    pairs.write_text("".join(f"{p.a}\t{p.b}\t{p.score}\n" for p in sts_zh("train")[:32]), encoding="utf-8")
    assert cli(["similarity", "--train", str(pairs), "--out", str(folder), "--no-progress", "--limit", "32",
                "--epochs", "1", "--maxlen", "32"]) == 0
    return folder


@contextlib.contextmanager
def serving(app):
    """Run ``app`` (``kexue.cli.serve.create_app``) on 127.0.0.1; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # bounded wait for start-up
            try:
                if httpx.get(url + "/health", timeout=1).status_code in (200, 401):
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("server did not start")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
