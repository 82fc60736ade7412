"""What the train / dev splits of the four sim-zh sets share: the pair-by-pair cut the first experiments used vs the
split grouped by sentence (kexue.data.splits) that they use now. Seeded 80/20, seed 0; writes
experiments/results/sim_zh_splits.{md,json}.

    PYTHONPATH=. python experiments/sim_zh_splits.py
"""
from __future__ import annotations

from pathlib import Path

from _report import write_report

from kexue.data.pairs import SIM_ZH_SETS, read_pairs, sim_zh_split
from kexue.data.paths import data_root
from kexue.data.splits import split_by_pair

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    data = {}
    lines = ["# sim-zh train / dev splits: what dev shares with train (80/20, seed 0)", "",
             "A dev pair 'shares' when sentence1 or sentence2 is also in a training pair. Grouped: whole connected "
             "components of the sentence graph go to one side (kexue.data.splits.grouped_split).", "",
             "| set | pairs | sentence components (largest, pairs) | by pair: dev sharing | grouped: train / dev / "
             "dropped | grouped: dev sharing |", "|---|---:|---|---:|---|---:|"]
    for name in SIM_ZH_SETS:
        pairs = read_pairs(data_root() / "sim-zh" / f"{name}.valid.data")
        old, new = split_by_pair(pairs, 0.2, 0).report, sim_zh_split(name, 0.2, 0).report
        data[name] = {"by_pair": old.as_dict(), "grouped": new.as_dict()}
        lines.append(f"| {name} | {len(pairs):,} | {new.components:,} ({new.largest}) | {old.dev_sharing} of "
                     f"{old.n_dev} ({100 * old.overlap:.1f} %) | {new.n_train} / {new.n_dev} / {new.dropped} | "
                     f"{new.dev_sharing} ({100 * new.overlap:.1f} %) |")
        print(old.line(f"{name} by pair"))
        print(new.line(f"{name} grouped"))
    write_report(OUT, "sim_zh_splits", lines, data)


if __name__ == "__main__":
    main()
