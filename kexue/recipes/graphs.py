"""The graph of each servable task, and exporting a saved model folder to ONNX (:mod:`kexue.recipes.export`
is the command; :mod:`kexue.recipes.fastpath` runs the graphs).

One graph per folder, batch and length dynamic (:func:`kexue.tools.onnx_export.export_graph`):

* encoder folders: ``(input_ids, segment_ids, attention_mask) -> hidden [B, L, H]``; the pooling
  (mean over real tokens, L2) stays in torch, as sentence-transformers' ONNX backend keeps it;
* ``classify``: the same inputs ``-> logits [B, labels]`` (Transformer + [CLS] + linear, one graph);
* ``ner``: ``(input_ids, attention_mask, span_mask) -> span logits [B, types, L, L]`` (GlobalPointer,
  Efficient GlobalPointer), or ``(input_ids, attention_mask) -> emissions [B, L, tags]`` (CRF: the
  Viterbi decoding, a loop over positions with back-pointers, runs in torch on the graph's output).

Refused, by task (:data:`REFUSED`): ``generate``, ``reading``, ``poem`` and ``dialogue`` decode token by
token over a KV cache (greedy / beam / sampling loops that grow the cache at every step): not one graph.

The batches a graph is exported and checked with are the ones the predictor itself builds: its
``predict`` runs on the check sentences and a forward pre-hook records what its model receives.

Files (:func:`export_folder`): ``model.onnx``, ``model_int8.onnx`` (ONNX Runtime's dynamic int8, one
weight scale per output column) and ``export.json`` (task, inputs, output, versions, the fingerprint of
the weights it came from, the checks). fp32 must equal the PyTorch model on padded batches of sentences
of different lengths to ``max|Δ| <= 1e-5 * max(1, max|output|)`` over real tokens, or nothing is
written; the int8 graph's agreement with fp32 is recorded against :data:`BUDGET`.

Agreement of a path's predictions with torch fp32 (:func:`agreement`) and the bounds it is held to
(:data:`FP32_TOLERANCE`, :data:`BUDGET`) live here too: the export checks and the path choice share them.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

FP32_FILE, INT8_FILE, MANIFEST = "model.onnx", "model_int8.onnx", "export.json"
FP32_TOLERANCE = 1e-5  # graphs: relative to max(1, max |output|); predictions: absolute (vectors, probabilities)
# Lower precision is admitted by precision="auto" only within these bounds on its agreement with fp32 over the
# calibration inputs (lower bounds, except max_abs_diff). The encoder's is set from experiments/int8_quality.py
# (docs/speed.md): on all-MiniLM-L6-v2, bf16 (+0.01 STS-B points) and ONNX Runtime's per-channel int8 (-0.23) meet
# it; per-tensor int8 (torch.ao -1.03, SmoothQuant -0.54, ONNX Runtime -0.32) does not. On kexue-zh-mini every
# path meets it and moved STS-B by at most 0.06. Classify: the same labels, probabilities within 0.02; NER: the
# same entities on every calibration input.
BUDGET = {"encoder": {"cosine_min": 0.97, "similarity_spearman": 0.99},
          "classify": {"label_agreement": 1.0, "max_abs_diff": 0.02},
          "ner": {"agreement": 1.0}}

# Which tasks have no graph, and why (kexue export onnx and backend="onnxruntime" say so by name).
REFUSED = {
    "generate": "text generation decodes token by token over a KV cache (a loop, not one graph)",
    "reading": "reading comprehension decodes answers token by token over a KV cache and votes across passages",
    "poem": "poem generation samples token by token over a KV cache (a loop, not one graph)",
    "dialogue": "dialogue replies decode token by token over a KV cache (a loop, not one graph)",
    "multimodal": "images are drawn by integrating a flow and captions decode token by token (loops, not one graph)",
    "custom": "a custom task runs its own forward and predict code, which kexue does not trace into one graph",
}

# Check and calibration sentences: Chinese and English, from a few characters to a long paragraph, so that
# every batch of them is padded. (Written for kexue; users check on their own data with --check-input.)
SAMPLE_TEXTS = (
    "今天天气很好。",
    "我想订一张明天上午从北京到上海的高铁票，最好是靠窗的座位。",
    "A man is playing a guitar.",
    "苹果",
    "The committee postponed its decision on the new bridge until the engineers had reviewed the soil reports.",
    "这家餐厅的菜味道一般，但是服务员非常热情，价格也比较公道，下次有机会还会再来。",
    "Where is the nearest train station?",
    "李明昨天在杭州西湖边遇见了多年未见的大学同学张华，两人一起去楼外楼吃了午饭。",
    "Two dogs run across a snowy field while a child throws a red ball toward the trees.",
    "请问怎么修改银行卡的预留手机号？",
    "She said no.",
    "中国科学院的研究人员在《自然》杂志上发表论文，报告了一种可以在室温下稳定工作的新型超导材料，"
    "引起了国内外同行的广泛关注，多家研究机构表示将尝试重复这一实验结果。",
    "The stock market rose sharply on Monday after the central bank signalled that interest rates would "
    "stay low for the rest of the year, although analysts warned that inflation remained a risk.",
    "花呗可以提前还款吗",
    "A woman slices an onion on a wooden cutting board.",
    "上海浦东发展银行",
)
# What kexue.load times and compares the candidate paths on: the sample sentences and each run of 2 and 3
# consecutive ones (48 inputs, a few to ~150 tokens), so a calibration sees batched work of mixed lengths as a
# corpus gives it, not a few short calls whose fixed costs would decide the ranking.
CALIBRATION_TEXTS = SAMPLE_TEXTS + tuple(
    " ".join(SAMPLE_TEXTS[(i + j) % len(SAMPLE_TEXTS)] for j in range(k)) for k in (2, 3) for i in range(len(SAMPLE_TEXTS)))


# --------------------------------------------------------------------------------------------------
# The graph of each task, the batches it takes, and a predictor that runs it
# --------------------------------------------------------------------------------------------------
class ClassifyGraph(nn.Module):
    """``(input_ids, segment_ids, attention_mask) -> logits``: the classifier as one graph."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.train(classifier.training)

    def forward(self, input_ids: Tensor, segment_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.classifier({"input_ids": input_ids, "segment_ids": segment_ids, "attention_mask": attention_mask})


class SpanGraph(nn.Module):
    """``(input_ids, attention_mask, span_mask) -> span logits``: a GlobalPointer tagger as one graph."""

    def __init__(self, tagger: nn.Module):
        super().__init__()
        self.tagger = tagger
        self.train(tagger.training)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, span_mask: Tensor) -> Tensor:
        return self.tagger({"input_ids": input_ids, "attention_mask": attention_mask, "span_mask": span_mask})


class EmissionGraph(nn.Module):
    """``(input_ids, attention_mask) -> emissions``: a CRF tagger up to its emission layer."""

    def __init__(self, tagger: nn.Module):
        super().__init__()
        self.tagger = tagger
        self.train(tagger.training)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.tagger({"input_ids": input_ids, "attention_mask": attention_mask})


class GraphTaskModule(nn.Module):
    """A task module (classifier, tagger) whose ``forward(batch)`` runs its exported graph in ONNX Runtime;
    what its predictor reads besides the forward is the original module's: every plain attribute (entity
    types, tags, the decoding rule) and the submodules named in ``keep`` (a CRF's transitions)."""

    def __init__(self, graph, original: nn.Module, keep: Sequence[str] = ()):
        super().__init__()
        self.graph = graph
        for name, value in vars(original).items():
            if not name.startswith("_") and name != "training":
                setattr(self, name, value)
        for name in keep:
            if hasattr(original, name):
                setattr(self, name, getattr(original, name))
        self.register_buffer("device_marker", torch.empty(0), persistent=False)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.graph(**batch)


class TaskGraph:
    """How one task becomes a graph: its module and input names, which outputs are compared, and a predictor
    running the graph. ``p`` is the task's predictor (fp32, torch)."""

    task = ""
    output = "output"

    def module(self, p) -> nn.Module:
        raise NotImplementedError

    def inputs(self, p) -> tuple[str, ...]:
        return ("input_ids", "segment_ids", "attention_mask")

    def items(self, p, texts: Sequence[Any]) -> list:
        """Predictor inputs from check texts (sentence pairs for a pair model)."""
        return [t if isinstance(t, str) else t[0] for t in texts]

    def named(self, p, args: tuple, kwargs: dict) -> dict[str, Tensor]:
        """The graph's inputs from one call of the predictor's model (a batch dict for task modules)."""
        return {n: args[0][n] for n in self.inputs(p)}

    def where(self, batch: dict[str, Tensor]) -> Tensor | None:
        """The output positions compared with the torch model (real tokens)."""
        return batch["attention_mask"]

    def check(self, p) -> None:
        """Refuse (``ValueError`` with the reason) a model of this task that the graph cannot serve."""

    def attach(self, p, graph):
        """A copy of ``p`` whose model runs ``graph`` (an :class:`~kexue.tools.onnx_export.OnnxGraph`)."""
        raise NotImplementedError


class EncoderTask(TaskGraph):
    task, output = "encoder", "hidden"
    POOLINGS = ("mean", "cls", "max", "last-token", "weighted-mean")  # read the last hidden states only

    def check(self, p) -> None:
        pooling = getattr(getattr(p, "spec", None), "pooling", "mean")
        if pooling not in self.POOLINGS:
            raise ValueError(f"an encoder pooled by {pooling!r} is not exported to ONNX: the graph gives the last "
                             f"hidden states, which pool by {', '.join(self.POOLINGS)}")

    def module(self, p):
        from kexue.tools.onnx_export import EncoderGraph

        return EncoderGraph(p.encoder)

    def named(self, p, args, kwargs):
        names = self.inputs(p)
        given = {**dict(zip(names, args)), **{k: v for k, v in kwargs.items() if k in names}}
        return {n: given[n] for n in names}

    def attach(self, p, graph):
        from kexue.tools.onnx_export import OnnxEncoder

        q = copy.copy(p)
        q.encoder = OnnxEncoder(graph, p.encoder.config)
        return q


class ClassifyTask(TaskGraph):
    task, output = "classify", "logits"

    def module(self, p):
        return ClassifyGraph(p.classifier)

    def items(self, p, texts):
        texts = [t if isinstance(t, str) else t[0] for t in texts]
        if p.pair:  # neighbours as pairs (a file may give its own: "a<TAB>b" lines)
            return [tuple(t.split("\t", 1)) if "\t" in t else (t, texts[(i + 1) % len(texts)])
                    for i, t in enumerate(texts)]
        return texts

    def where(self, batch):
        return None  # one row of logits per input

    def attach(self, p, graph):
        q = copy.copy(p)
        q.classifier = GraphTaskModule(graph, p.classifier)
        return q


class NERTask(TaskGraph):
    task = "ner"

    @staticmethod
    def crf(p) -> bool:
        return p.tagger.head_name == "crf"

    def module(self, p):
        return EmissionGraph(p.tagger) if self.crf(p) else SpanGraph(p.tagger)

    def inputs(self, p):
        return ("input_ids", "attention_mask") + (() if self.crf(p) else ("span_mask",))

    def where(self, batch):
        if "span_mask" in batch:
            m = batch["span_mask"].bool()
            return m[:, None, :, None] & m[:, None, None, :]
        return batch["attention_mask"]

    def attach(self, p, graph):
        q = copy.copy(p)
        q.tagger = GraphTaskModule(graph, p.tagger, keep=("crf",))
        return q


GRAPHS: dict[str, TaskGraph] = {t.task: t for t in (EncoderTask(), ClassifyTask(), NERTask())}


def task_graph(task: str) -> TaskGraph:
    """The :class:`TaskGraph` of ``task``; a task without one is refused with the reason."""
    if task in GRAPHS:
        return GRAPHS[task]
    why = REFUSED.get(task, "no graph is defined for it")
    raise ValueError(f"{task} models are not exported to ONNX: {why} (exported: {', '.join(sorted(GRAPHS))})")


def model_batches(spec: TaskGraph, p, chunks: Sequence[Sequence[Any]]) -> list[dict[str, Tensor]]:
    """The graph inputs of every batch the predictor's model receives while ``p.predict`` runs each chunk
    of inputs: the batches exactly as the predictor builds them (a forward pre-hook records them)."""
    found: list[dict[str, Tensor]] = []

    def record(module, args, kwargs):
        found.append(spec.named(p, args, kwargs))

    handle = p.model.register_forward_pre_hook(record, with_kwargs=True)
    progress, p.progress = p.progress, False
    try:
        for chunk in chunks:
            p.predict(list(chunk))
    finally:
        handle.remove()
        p.progress = progress
    return found


def check_batches(spec: TaskGraph, p, items: Sequence[Any]) -> list[dict[str, Tensor]]:
    """Padded batches of different sizes and lengths, as the predictor builds them from 1, 3, 5 and the
    rest of the items (in their order)."""
    chunks, start = [], 0
    for size in (1, 3, 5, len(items)):
        if start < len(items):
            chunks.append(items[start:start + size])
            start += size
    return model_batches(spec, p, chunks)


# --------------------------------------------------------------------------------------------------
# Agreement of a path's predictions with torch fp32's
# --------------------------------------------------------------------------------------------------
def agreement(task: str, reference: list[dict], outputs: list[dict]) -> dict[str, float]:
    """How close ``outputs`` are to the fp32 ``reference`` predictions of the same inputs: encoder
    ``max_abs_diff`` and ``cosine_min`` of the sentence vectors; classify ``max_abs_diff`` of the
    probabilities and ``label_agreement``; ner and other tasks ``agreement`` (share of identical outputs)."""
    if len(reference) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(reference)} reference predictions")
    if task == "encoder":
        pairs = [(torch.tensor(r["embedding"]), torch.tensor(o["embedding"])) for r, o in zip(reference, outputs)
                 if "embedding" in r]
        a, b = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        out = {"max_abs_diff": float((a - b).abs().max()), "cosine_min": float(cos.min())}
        if len(a) >= 3:  # the similarities between the sentences: what search and STS rank by
            from kexue.similarity.evaluate import spearman

            i, j = torch.triu_indices(len(a), len(a), 1)
            na, nb = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1)
            sa, sb = (na @ na.T)[i, j], (nb @ nb.T)[i, j]
            out.update(similarity_max_abs_diff=float((sa - sb).abs().max()), similarity_spearman=spearman(sb, sa))
        return out
    if task == "classify":
        diff = max(abs(r["probabilities"][k] - o["probabilities"][k]) for r, o in zip(reference, outputs)
                   for k in r["probabilities"])
        same = sum(r["label"] == o["label"] for r, o in zip(reference, outputs)) / len(reference)
        return {"max_abs_diff": diff, "label_agreement": same}
    return {"agreement": sum(r == o for r, o in zip(reference, outputs)) / len(reference)}


def exact(task: str, agreed: dict[str, float]) -> bool:
    """An fp32 path equals torch fp32: |Δ| <= :data:`FP32_TOLERANCE`, or identical outputs."""
    if "max_abs_diff" in agreed:
        return agreed["max_abs_diff"] <= FP32_TOLERANCE
    return agreed["agreement"] == 1.0


def within_budget(task: str, agreed: dict[str, float]) -> bool:
    """A lower precision's agreement is within :data:`BUDGET` (tasks without a budget: never)."""
    budget = BUDGET.get(task)
    if budget is None:
        return False
    for name, bound in budget.items():
        if name not in agreed:  # not measured (e.g. similarities need 3 sentences): not shown to be within
            return False
        if name == "max_abs_diff":
            if agreed[name] > bound:
                return False
        elif agreed[name] < bound:
            return False
    return True


# --------------------------------------------------------------------------------------------------
# The weights a graph came from
# --------------------------------------------------------------------------------------------------
SOURCE_FILES = ("config.json", "task.json", "vocab.txt")  # and every weight file (*.safetensors, *.bin, *.index.json)


def source_files(directory: str | Path) -> list[Path]:
    """The files of a model folder that a graph is built from: config, task settings, vocabulary, weights."""
    directory = Path(directory)
    weights = [p for pattern in ("*.safetensors", "*.bin", "*.index.json") for p in directory.glob(pattern)]
    return sorted({directory / n for n in SOURCE_FILES if (directory / n).is_file()} | set(weights))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(directory: str | Path) -> dict[str, dict[str, Any]]:
    """``{file: {"size", "sha256"}}`` of the folder's files a graph is built from (:func:`source_files`)."""
    return {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in source_files(directory)}


def same_source(directory: str | Path, recorded: dict) -> bool:
    """Whether the folder's files are the ones ``recorded`` (sizes first; hashes only when sizes agree)."""
    files = {p.name: p for p in source_files(directory)}
    if set(files) != set(recorded) or any(p.stat().st_size != recorded[n]["size"] for n, p in files.items()):
        return False
    return all(_sha256(p) == recorded[n]["sha256"] for n, p in files.items())


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------
def add_to_unit(directory: Path, src: Path, name: str) -> None:
    """Rewrite the model folder ``directory`` as one unit (:func:`kexue.io.write_folder`) with the folder
    ``src`` as its entry ``name`` (replacing an earlier one): the manifest then lists and hashes it, and a
    later save of the model (a retrained folder) drops it with the rest of the old unit."""
    import shutil

    from kexue.io import read_manifest, write_folder

    manifest = read_manifest(directory)
    keep = [rel for rel in manifest["files"] if rel.split("/")[0] != name]
    with write_folder(directory, manifest, overwrite=True) as stage:
        for rel in keep:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(directory / rel, stage / rel)
        shutil.copytree(src, stage / name)


def export_folder(p, directory: str | Path, out: str | Path, int8: bool = True,
                  texts: Sequence[Any] = SAMPLE_TEXTS, per_channel: bool = True) -> dict:
    """Export the fp32 predictor ``p`` (loaded from ``directory``) into ``out``, check it, write the
    manifest and return it. The fp32 graph must equal the PyTorch model (:data:`FP32_TOLERANCE`);
    otherwise nothing is left in ``out`` and a ``ValueError`` gives the difference."""
    from kexue.io import write_json
    from kexue.tools.onnx_export import OPSET, OnnxGraph, check_graph, export_graph, quantize_graph

    spec = task_graph(p.task)
    spec.check(p)
    directory, out = Path(directory), Path(out)
    from kexue.io import read_manifest

    if out.resolve().parent == directory.resolve() and read_manifest(directory) is not None:
        # a folder written as one unit (manifest.json lists every file): the graphs join the unit
        import tempfile

        with tempfile.TemporaryDirectory(dir=directory.parent, prefix=f".{directory.name}.onnx-") as tmp:
            manifest = export_folder(p, directory, Path(tmp) / out.name, int8, texts, per_channel)
            add_to_unit(directory, Path(tmp) / out.name, out.name)
        return manifest
    items = spec.items(p, texts)
    if len(items) < 2:
        raise ValueError("the export check needs at least 2 inputs")
    module = spec.module(p)
    names = spec.inputs(p)
    batches = check_batches(spec, p, items)
    example = next((b for b in batches if min(b[names[0]].shape[:2]) >= 2), None)
    if example is None:
        raise ValueError("the export check inputs make no batch of at least 2 inputs of 2 tokens")
    positions = getattr(getattr(p.model, "config", None), "max_position_embeddings", None) or getattr(
        getattr(getattr(p.model, "encoder", None), "config", None), "max_position_embeddings", None)
    fp32 = export_graph(module, example, out / FP32_FILE, [spec.output], positions)
    graph = OnnxGraph(fp32)
    check = check_graph(graph, module, batches, spec.where)
    tolerance = FP32_TOLERANCE * max(1.0, check["max_abs_reference"])
    check.update(tolerance=tolerance, ok=check["max_abs_diff"] <= tolerance, batches=[list(b["input_ids"].shape)
                                                                                  for b in batches])
    if not check["ok"]:
        fp32.unlink()
        raise ValueError(f"the ONNX graph differs from the PyTorch model by {check['max_abs_diff']:.2e} "
                         f"(> {tolerance:.1e}); nothing was written")
    reference = p.predict(items)
    check["predictions"] = agreement(p.task, reference, spec.attach(p, graph).predict(items))
    checks = {"fp32": check}
    files = {"fp32": FP32_FILE}
    if int8:
        q = quantize_graph(fp32, out / INT8_FILE, per_channel=per_channel)
        graph8 = OnnxGraph(q)
        c8 = check_graph(graph8, module, batches, spec.where)
        c8.update(predictions=agreement(p.task, reference, spec.attach(p, graph8).predict(items)),
                  per_channel=per_channel)
        c8["within_budget"] = within_budget(p.task, c8["predictions"])
        checks["int8"], files["int8"] = c8, INT8_FILE
    import onnxruntime

    manifest = {"format": "onnx", "task": p.task, "inputs": list(names), "output": spec.output, "opset": OPSET,
                "files": files, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                "source": fingerprint(directory), "checks": checks}
    write_json(out / MANIFEST, manifest)
    return manifest


__all__ = ["BUDGET", "CALIBRATION_TEXTS", "add_to_unit", "FP32_FILE", "FP32_TOLERANCE", "GRAPHS", "INT8_FILE", "MANIFEST", "REFUSED",
           "SAMPLE_TEXTS",
           "TaskGraph", "agreement", "check_batches", "exact", "export_folder", "fingerprint", "model_batches",
           "same_source", "source_files", "task_graph", "within_budget"]
