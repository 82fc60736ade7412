"""The real all-MiniLM-L6-v2 through kexue equals sentence-transformers on real sentences."""
import torch
from sentence_transformers import SentenceTransformer

from kexue.data import shipped as datasets
from kexue.models.pretrained import embed, minilm, minilm_path


def test_minilm_embeddings_equal_sentence_transformers():
    pairs = datasets.sts_en("test")[:80]
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    assert len(sentences) >= 100
    model, tok = minilm()
    ours = embed(model, tok, sentences, batch_size=32)
    st = SentenceTransformer(str(minilm_path()), device="cpu")
    theirs = torch.from_numpy(st.encode(sentences, batch_size=32, normalize_embeddings=True))
    cos_dist = 1 - (ours * theirs).sum(-1)
    assert cos_dist.abs().max() <= 1e-5, cos_dist.abs().max()
    assert (ours - theirs).abs().max() <= 1e-5
