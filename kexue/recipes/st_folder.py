r"""sentence-transformers folders, both ways: how an encoder folder turns token vectors into sentence vectors.

An encoder's sentence vector is, in order (:class:`EncoderSpec`):

.. math::
    v = \text{pool}_{m}(h, \text{mask}) \;\to\; v / \lVert v \rVert_2 \ (\text{normalize}) \;\to\;
    (v - \beta\mu)\,U\Lambda^{-\gamma/2}\ (\text{whitening, first } k \text{ columns})

with the pooling :math:`m` of :func:`kexue.heads.pooling.pool` and BERT-whitening from
《当BERT-whitening引入超参数：总有一款适合你》 (:mod:`kexue.similarity.whitening`).

**Reading** (:func:`encoder_spec`). A kexue folder's ``manifest.json`` says it: ``pooling``, and the
``post_processing`` steps ``normalize`` and ``whitening`` (a folder written before kexue recorded
``normalize`` — a manifest without ``modules.json`` beside it — normalises, as it always did). A
sentence-transformers folder (no manifest) says it in ``modules.json``: a ``Transformer`` at the folder
root, then a ``Pooling`` (``1_Pooling/config.json``: the legacy ``pooling_mode_*`` booleans or the newer
``pooling_mode`` name, and ``include_prompt``), then optionally ``Normalize``; any other module (Dense,
LayerNorm, CNN, ...) and the pooling ``mean_sqrt_len_tokens`` are refused by name. Either kind may carry
``sentence_bert_config.json`` (``max_seq_length``, ``do_lower_case``) and ``config_sentence_transformers.json``
(``prompts``, ``default_prompt_name``): a prompt is prepended to each text; with ``include_prompt: false``
its tokens (``[CLS]`` + the prompt's word pieces) are left out of the pooling, as sentence-transformers does.

**Writing** (:func:`st_files`). Every kexue encoder folder whose pooling sentence-transformers has also gets
``modules.json``, ``1_Pooling/config.json``, ``2_Normalize`` (if it normalises), ``3_Dense`` holding the
whitening as the affine map :math:`x \mapsto x\,M - \beta\mu M` (:math:`M = U\Lambda^{-\gamma/2}`, identity
activation) and ``sentence_bert_config.json``, so ``SentenceTransformer(folder).encode`` gives its vectors.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from torch import Tensor

from kexue.io import FolderError, check_type, read_json, read_manifest, save_safetensors, write_json

MODULES = "modules.json"
POOLING_DIR, NORMALIZE_DIR, DENSE_DIR = "1_Pooling", "2_Normalize", "3_Dense"
ST_CONFIG, ST_PROMPTS = "sentence_bert_config.json", "config_sentence_transformers.json"
#: sentence-transformers' pooling names (legacy config key, new ``pooling_mode`` value) -> kexue's
ST_POOLINGS = {"cls": ("pooling_mode_cls_token", "cls"), "mean": ("pooling_mode_mean_tokens", "mean"),
               "max": ("pooling_mode_max_tokens", "max"),
               "mean_sqrt_len_tokens": ("pooling_mode_mean_sqrt_len_tokens", None),
               "weightedmean": ("pooling_mode_weightedmean_tokens", "weighted-mean"),
               "lasttoken": ("pooling_mode_lasttoken", "last-token")}
#: kexue poolings sentence-transformers can express
WRITABLE = {kx: st for st, (_, kx) in ST_POOLINGS.items() if kx}
_MODULE_DIR = re.compile(r"\d+_[A-Za-z]\w*")


@dataclass
class EncoderSpec:
    """How an encoder folder makes sentence vectors (see the module docstring)."""

    pooling: str = "mean"
    normalize: bool = True
    whitening: Any = None  # a kexue.similarity.whitening.Whitening
    maxlen: int | None = None
    lowercase: bool = False
    include_prompt: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None

    def prompt(self, name: str | None) -> str:
        """The text prepended for prompt ``name`` (None: the folder's default prompt, if any)."""
        name = self.default_prompt if name is None else name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(f"unknown prompt name {name!r}; this encoder's prompts: "
                             f"{', '.join(sorted(self.prompts)) or 'none'} ({ST_PROMPTS})")
        return self.prompts[name]

    def texts(self, texts: Sequence[str], prompt: str, tokenizer) -> tuple[list[str], int]:
        """(the texts as the encoder reads them, tokens at the start to leave out of the pooling)."""
        texts = [prompt + t for t in texts]
        if self.lowercase:
            texts = [t.lower() for t in texts]
        skip = 0
        if prompt and not self.include_prompt:
            if self.pooling == "weighted-mean":
                raise ValueError("pooling 'weighted-mean' with include_prompt false and a prompt is not supported "
                                 f"({POOLING_DIR}/config.json)")
            skip = len(tokenizer.encode(prompt.lower() if self.lowercase else prompt)[0]) - 1  # [CLS] + prompt
        return texts, skip

    def post(self, vectors: Tensor) -> Tensor:
        """The folder's post-processing after pooling and normalisation: its whitening, if any."""
        return self.whitening.transform(vectors) if self.whitening is not None else vectors


def _module_kind(entry: Any, path: Path, i: int) -> tuple[str, str]:
    check_type(entry, "object", path, f"[{i}]")
    kind = check_type(entry.get("type"), "string", path, f"[{i}].type")
    where = check_type(entry.get("path", ""), "string", path, f"[{i}].path")
    return kind.rsplit(".", 1)[-1] if kind.startswith("sentence_transformers.") else kind, where


def read_st_pooling(directory: Path) -> tuple[str, bool]:
    """(kexue pooling name, include_prompt) of ``1_Pooling/config.json`` (either config layout)."""
    path = directory / POOLING_DIR / "config.json"
    config = check_type(read_json(path), "object", path, "(top level)")
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else modes
        check_type(modes, "list of strings", path, "pooling_mode")
    else:
        modes = [st for st, (key, _) in ST_POOLINGS.items() if check_type(config.get(key, False), "boolean", path, key)]
    unknown = [m for m in modes if m not in ST_POOLINGS]
    if unknown:
        raise FolderError(f"{path}: unknown pooling mode {unknown[0]!r}")
    if len(modes) != 1:
        raise FolderError(f"{path}: {len(modes)} pooling modes ({', '.join(modes) or 'none'}); kexue pools one way "
                          "(sentence-transformers would concatenate them)")
    pooling = ST_POOLINGS[modes[0]][1]
    if pooling is None:
        raise FolderError(f"{path}: pooling mode {modes[0]!r} is not supported by kexue (supported: "
                          f"{', '.join(st for st, (_, kx) in ST_POOLINGS.items() if kx)})")
    return pooling, check_type(config.get("include_prompt", True), "boolean", path, "include_prompt")


def read_st_modules(directory: Path, allow_dense: bool = False) -> tuple[str, bool, bool]:
    """(pooling, include_prompt, normalize) of a folder's ``modules.json``: Transformer at the root, Pooling,
    then Normalize (and, in a kexue folder, the Dense holding its whitening); anything else is refused."""
    path = directory / MODULES
    entries = check_type(read_json(path), "list", path, "(top level)")
    kinds = [_module_kind(e, path, i) for i, e in enumerate(entries)]
    names = [k for k, _ in kinds]
    for kind, where in kinds:
        if kind not in ("Transformer", "Pooling", "Normalize") and not (allow_dense and kind == "Dense"):
            raise FolderError(f"{path}: module {kind!r} is not supported by kexue (it reads Transformer, Pooling, "
                              "Normalize)")
    if names[:2] != ["Transformer", "Pooling"] or len(names) > 2 + ("Normalize" in names) + ("Dense" in names):
        raise FolderError(f"{path}: modules {' -> '.join(names)}; kexue reads Transformer -> Pooling [-> Normalize]")
    if kinds[0][1] not in ("", "."):
        raise FolderError(f"{path}: the Transformer is in {kinds[0][1]!r}; kexue reads it from the folder root")
    if kinds[1][1] != POOLING_DIR:
        raise FolderError(f"{path}: the Pooling module is in {kinds[1][1]!r}; kexue reads it from {POOLING_DIR}")
    pooling, include_prompt = read_st_pooling(directory)
    return pooling, include_prompt, "Normalize" in names


def encoder_spec(directory: str | Path, settings: dict | None = None) -> EncoderSpec:
    """The :class:`EncoderSpec` a folder records (manifest first, else ``modules.json``, else kexue's default:
    mean pooling, normalised); ``settings``: its ``task.json`` settings (``maxlen``)."""
    from kexue.similarity.whitening import Whitening

    directory = Path(directory)
    manifest = read_manifest(directory)
    spec = EncoderSpec()
    has_modules = (directory / MODULES).is_file()
    if manifest is not None:
        post = manifest["post_processing"]
        unknown = [n for n in post if n not in ("normalize", "whitening")]
        if unknown:
            raise FolderError(f"{directory / 'manifest.json'}: post-processing step {unknown[0]!r} is not one an "
                              "encoder applies (normalize, whitening)")
        spec.pooling = manifest["pooling"] or "mean"
        spec.normalize = "normalize" in post or not has_modules
        spec.whitening = Whitening.from_folder(directory) if "whitening" in post else None
        if has_modules and spec.pooling in WRITABLE:
            pooling, spec.include_prompt, normalize = read_st_modules(directory, allow_dense=spec.whitening is not None)
            if (pooling, normalize) != (spec.pooling, spec.normalize):
                raise FolderError(f"{directory / MODULES}: pools by {pooling!r}{' + Normalize' * normalize}, but "
                                  f"manifest.json says {spec.pooling!r}{' + normalize' * spec.normalize}")
    elif has_modules:
        spec.pooling, spec.include_prompt, spec.normalize = read_st_modules(directory)
    if (directory / ST_CONFIG).is_file():
        path = directory / ST_CONFIG
        config = check_type(read_json(path), "object", path, "(top level)")
        spec.maxlen = check_type(config.get("max_seq_length"), "integer or null", path, "max_seq_length")
        spec.lowercase = check_type(config.get("do_lower_case", False), "boolean", path, "do_lower_case")
    if (settings or {}).get("maxlen"):
        spec.maxlen = settings["maxlen"]
    if (directory / ST_PROMPTS).is_file():
        path = directory / ST_PROMPTS
        config = check_type(read_json(path), "object", path, "(top level)")
        prompts = check_type(config.get("prompts") or {}, "object", path, "prompts")
        for name, text in prompts.items():
            check_type(text, "string", path, f"prompts.{name}")
        spec.prompts = dict(prompts)
        spec.default_prompt = check_type(config.get("default_prompt_name"), "string or null", path,
                                         "default_prompt_name")
        if spec.default_prompt is not None and spec.default_prompt not in prompts:
            raise FolderError(f"{path}: field 'default_prompt_name' is {spec.default_prompt!r}, not one of its prompts")
    return spec


def st_module_file(rel: str) -> bool:
    """Whether ``rel`` (a path inside a folder) is one of the sentence-transformers module files
    :func:`st_files` writes (regenerated, never copied, when a folder is rewritten)."""
    top = rel.split("/")[0]
    return rel == MODULES or (top != rel and bool(_MODULE_DIR.fullmatch(top)))


def write_st_modules(stage: Path, info: dict, hidden_size: int, maxlen: int | None, include_prompt: bool = True) -> None:
    """Write the sentence-transformers modules of the encoder folder being staged in ``stage`` (``info``: its
    :func:`kexue.io.folder_info`; the whitening file, if any, is already there). Nothing for a pooling
    sentence-transformers does not have (``first-last-avg``, ``pooler``)."""
    pooling = info.get("pooling") or "mean"
    post = info.get("post_processing") or {}
    if pooling not in WRITABLE:
        return
    st = WRITABLE[pooling]
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"}]
    config = {"word_embedding_dimension": hidden_size, **{key: mode == st for mode, (key, _) in ST_POOLINGS.items()},
              "include_prompt": include_prompt}
    write_json(stage / POOLING_DIR / "config.json", config)
    if "normalize" in post:
        modules.append({"idx": 2, "name": "2", "path": NORMALIZE_DIR, "type": "sentence_transformers.models.Normalize"})
        write_json(stage / NORMALIZE_DIR / "config.json", {})
    if "whitening" in post:
        from kexue.similarity.whitening import Whitening

        w = Whitening.load(stage / post["whitening"]["file"])
        m = w.matrix  # [d, k] float64
        bias = -(w.beta * w.mu) @ m
        write_json(stage / DENSE_DIR / "config.json", {"in_features": int(m.shape[0]), "out_features": int(m.shape[1]),
                                                       "bias": True,
                                                       "activation_function": "torch.nn.modules.linear.Identity"})
        save_safetensors({"linear.weight": m.T.float(), "linear.bias": bias.float()}, stage / DENSE_DIR / "model.safetensors")
        modules.append({"idx": 3, "name": "3", "path": DENSE_DIR, "type": "sentence_transformers.models.Dense"})
    write_json(stage / MODULES, modules)
    if not (stage / ST_CONFIG).exists():
        write_json(stage / ST_CONFIG, {"max_seq_length": maxlen or 256, "do_lower_case": False})


__all__ = ["EncoderSpec", "MODULES", "WRITABLE", "encoder_spec", "read_st_modules", "read_st_pooling",
           "st_module_file", "write_st_modules"]
