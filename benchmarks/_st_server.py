"""The peer of ``benchmarks/serve_load.py``: sentence-transformers behind a minimal FastAPI app.

    python benchmarks/_st_server.py MODEL_DIR PORT THREADS

What a user writes to serve a sentence-transformers model without kexue: one ``SentenceTransformer``,
``POST /predict {"inputs": [...]}`` -> ``{"outputs": [{"embedding": [...]}, ...]}`` (the shape of
``kexue serve``'s answer for an encoder folder, so the load generator drives both the same way), and
``GET /health``. The endpoint is a plain ``def``: FastAPI runs it in its thread pool, one ``encode`` per
request, batch size 32 (``encode``'s default), normalised as the folder's ``modules.json`` says.
"""
import sys

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

MODEL, PORT, THREADS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(THREADS)
model = SentenceTransformer(MODEL, device="cpu")
app = FastAPI()


class Request(BaseModel):
    inputs: list[str]


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/predict")
def predict(req: Request) -> dict:
    vectors = model.encode(req.inputs, batch_size=32, convert_to_numpy=True)
    return {"outputs": [{"embedding": v.tolist()} for v in vectors]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
