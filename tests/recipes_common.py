"""Shared by the recipe-run tests: slices of each recipe's real data written as its --train/--dev files, a tiny
command per recipe, and helpers to compare what two runs saved."""
from __future__ import annotations

import json
from pathlib import Path

from kexue.data import shipped as datasets

TASKS = ("ner", "classify", "reading", "poem", "dialogue", "similarity")
#: the result files of a task recipe's folder that must be equal between two runs (metrics without timings)
RESULT_FILES = ("model.safetensors", "head.safetensors", "eval_predictions.jsonl", "vocab.txt")
TIMINGS = ("seconds", "train_seconds", "train_hours_this_run")


def write_data(d: Path) -> dict[str, dict[str, Path]]:
    """{recipe: {"train": file, "dev": file}} from the shipped data, a few dozen examples each."""
    from kexue.data.pairs import sim_zh
    from kexue.recipes.classify import poem_data
    from kexue.recipes.dialogue import fortunes_dialogues

    files: dict[str, dict[str, Path]] = {}

    def put(name, part, text):
        path = d / f"{name}.{part}"
        path.write_text(text, encoding="utf-8")
        files.setdefault(name, {})[part] = path

    tagged = lambda sents: "".join("".join(f"{c} {t}\n" for c, t in zip(cs, ts)) + "\n" for cs, ts in sents)  # noqa: E731
    ner_train = [s for s in datasets.ner_peoples_daily("dev") if any(t != "O" for t in s[1])][:16]
    put("ner", "train", tagged(ner_train))
    put("ner", "dev", tagged(datasets.ner_peoples_daily("test")[:8]))
    poems = poem_data("dynasty")
    tang, song = [r for r in poems if r[1] == "唐"], [r for r in poems if r[1] == "宋"]
    mixed = [r for pair in zip(tang, song) for r in pair]
    flat = lambda t: t.replace("\n", "").replace("\t", "")  # noqa: E731
    put("classify", "train", "".join(f"{flat(t)[:40]}\t{lab}\n" for t, lab in mixed[:16]))
    put("classify", "dev", "".join(f"{flat(t)[:40]}\t{lab}\n" for t, lab in mixed[16:24]))
    records = datasets.webqa()
    put("reading", "train", json.dumps(records[:2], ensure_ascii=False))
    put("reading", "dev", json.dumps(records[2:3], ensure_ascii=False))
    put("poem", "train", "".join(f"{lab}\t{flat(t)[:30]}\n" for t, lab in mixed[:12]))
    put("poem", "dev", "".join(f"{lab}\t{flat(t)[:30]}\n" for t, lab in mixed[12:16]))
    dialogues = fortunes_dialogues()
    put("dialogue", "train", "\n".join("\n".join(t[:40] for t in x) + "\n" for x in dialogues[:12]))
    put("dialogue", "dev", "\n".join("\n".join(t[:40] for t in x) + "\n" for x in dialogues[12:16]))
    train, dev = sim_zh("LCQMC", "train")[:24], sim_zh("LCQMC", "dev")[:16]
    put("similarity", "train", "".join(f"{p.a}\t{p.b}\t{int(p.score)}\n" for p in train))
    put("similarity", "dev", "".join(f"{p.a}\t{p.b}\t{int(p.score)}\n" for p in dev))
    corpus = d / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n".join(t.replace("\n", "") for t in datasets.chinese_text()[:40]), encoding="utf-8")
    files["pretrain"] = {"train": corpus}
    return files


SIZES = {"ner": ["--maxlen", "32"], "classify": ["--maxlen", "48"], "reading": ["--maxlen", "64", "--max-answer", "4"],
         "poem": ["--maxlen", "40", "--samples", "1", "--cond-dim", "16"], "dialogue": ["--maxlen", "48"],
         "similarity": ["--maxlen", "32"]}


def task_command(name: str, files: dict, epochs: int = 3, dev: bool = True, *extra: str) -> list[str]:
    """A tiny run of task recipe ``name`` (2-3 updates per epoch) on its data slice."""
    argv = [name, "--train", str(files[name]["train"]), "--epochs", str(epochs), "--batch-size", "8", "--no-progress",
            *SIZES[name], *extra]
    return argv + (["--dev", str(files[name]["dev"])] if dev else [])


def other_command(name: str, files: dict) -> list[str]:
    """A tiny run of ``pretrain`` / ``zh-mini`` / ``multimodal`` / ``diffusion`` / ``gan`` (6 updates)."""
    if name == "pretrain":
        return ["pretrain", "--data", str(files["pretrain"]["train"]), "--hidden", "32", "--layers", "1", "--maxlen",
                "32", "--batch-size", "8", "--steps", "6", "--no-progress"]
    if name == "multimodal":
        return ["multimodal", "--steps", "6", "--limit", "60", "--hidden", "32", "--layers", "1", "--heads", "4",
                "--sample-steps", "2", "--batch-size", "16", "--no-progress"]
    if name == "zh-mini":
        return ["zh-mini", "--steps", "6", "--no-progress"]
    if name == "diffusion":
        return ["diffusion", "--train-steps", "6", "--width", "8", "--n", "4", "--nfe", "2"]
    return ["gan", "--steps", "6", "--batch-size", "16", "--width", "8", "--z-dim", "8", "--n", "4"]


def results(out: Path) -> dict[str, object]:
    """What a run saved that must be reproducible: result files' bytes and metrics.json without timings."""
    got: dict[str, object] = {name: (out / name).read_bytes() for name in RESULT_FILES if (out / name).exists()}
    if (out / "metrics.json").exists():
        got["metrics.json"] = {k: v for k, v in json.loads((out / "metrics.json").read_text(encoding="utf-8")).items()
                               if k not in TIMINGS}
    return got


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), the run folder included."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, argv, *words) -> str:
    """``kexue argv`` exits 2 with one ``kexue: error:`` line (no traceback) naming every one of ``words``."""
    from kexue.cli import main as cli

    capsys.readouterr()
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kexue: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err
