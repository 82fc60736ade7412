"""The one batch maker (:mod:`kexue.data.batching`): every item exactly once per epoch, the same seed (or the
same torch RNG state) the same batches, length buckets sorted, outputs restored to input order, the epochs
the old trainers drew kept bit for bit, and ``kexue.train.fit`` resuming mid-epoch onto the same batches."""
import random

import pytest
import torch
from torch import nn

from kexue.data.batching import RandomBatches, count_batches, index_batches, length_batches, restore_order

_RNG = random.Random(7)
LENGTHS = [_RNG.randrange(1, 60) for _ in range(1234)]  # sentence lengths in tokens


def once_each(batches, n):
    flat = [i for b in batches for i in b]
    return sorted(flat) == list(range(n))


@pytest.mark.parametrize("rng", [{"seed": 3}, {"generator": "g"}, {}])
def test_every_item_exactly_once_and_the_same_seed_the_same_batches(rng):
    def make(kind, **extra):
        args = {k: (torch.Generator().manual_seed(5) if v == "g" else v) for k, v in rng.items()}
        torch.manual_seed(9)  # the global RNG, for the no-seed case
        if kind == "index":
            return index_batches(len(LENGTHS), 32, **args, **extra)
        return length_batches(LENGTHS, 32, **args, **extra)

    for kind in ("index", "length"):
        a, b = make(kind), make(kind)
        assert once_each(a, len(LENGTHS)) and a == b, kind
        assert [len(x) for x in a].count(32) == len(LENGTHS) // 32 and len(a) == -(-len(LENGTHS) // 32)
        assert a != sorted(a)  # shuffled
        full = make(kind, min_size=32)  # only the short batch is dropped
        assert all(len(x) == 32 for x in full) and len(full) == len(LENGTHS) // 32
    assert index_batches(10, 4, shuffle=False) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert index_batches(0, 4, seed=1) == [] and length_batches([], 4, seed=1) == []


def test_seeds_differ_and_epochs_are_rebuilt_from_the_epoch_number():
    epochs = [index_batches(100, 8, 40 + e) for e in range(3)]
    assert len({str(e) for e in epochs}) == 3
    assert index_batches(100, 8, 41) == epochs[1]
    assert length_batches(LENGTHS, 16, 1) != length_batches(LENGTHS, 16, 2)


def test_length_buckets_are_sorted():
    for b in length_batches(LENGTHS, 16, seed=0):  # shuffled: sorted within every batch
        assert [LENGTHS[i] for i in b] == sorted(LENGTHS[i] for i in b)
    spread = lambda bs: sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in bs)
    assert spread(length_batches(LENGTHS, 16, seed=0)) < spread(index_batches(len(LENGTHS), 16, seed=0)) / 3
    buckets = length_batches(LENGTHS, 16, shuffle=False)  # unshuffled: every length in order, ties stable
    flat = [i for b in buckets for i in b]
    assert flat == sorted(range(len(LENGTHS)), key=lambda i: (LENGTHS[i], i))


def test_outputs_restored_to_input_order():
    buckets = length_batches(LENGTHS, 50, shuffle=False)
    outputs = [LENGTHS[i] * 10 for b in buckets for i in b]  # one output per item, in batch order
    assert restore_order(outputs, buckets) == [x * 10 for x in LENGTHS]
    rows = torch.tensor([[LENGTHS[i], i] for b in buckets for i in b])
    assert torch.equal(restore_order(rows, buckets), torch.tensor([[x, i] for i, x in enumerate(LENGTHS)]))
    shuffled = index_batches(len(LENGTHS), 7, seed=4)
    assert restore_order([i for b in shuffled for i in b], shuffled) == list(range(len(LENGTHS)))
    with pytest.raises(ValueError, match="outputs for"):
        restore_order(outputs[:-1], buckets)
    with pytest.raises(ValueError, match="exactly once"):
        restore_order([0, 1, 2], [[0, 1], [1]])


def old_length_batches(lengths, batch_size, seed):
    """The bucketing kexue.similarity.finetune and kexue.recipes.common each carried before."""
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    window, out = batch_size * 50, []
    for s in range(0, len(idx), window):
        chunk = sorted(idx[s:s + window], key=lambda i: lengths[i])
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def old_epoch(n, batch_size, seed):
    """The epoch shuffle of kexue.similarity.pair_training / simbert / recipes.common before."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def test_the_old_trainers_epochs_are_kept_bit_for_bit():
    for seed in (0, 1, 17):
        assert length_batches(LENGTHS, 32, seed) == old_length_batches(LENGTHS, 32, seed)
        assert index_batches(len(LENGTHS), 24, seed) == old_epoch(len(LENGTHS), 24, seed)
        assert index_batches(101, 10, seed, min_size=2) == [b for b in old_epoch(101, 10, seed) if len(b) >= 2]
    torch.manual_seed(3)
    idx = torch.randperm(103)
    old = list(idx[: 103 // 8 * 8].split(8))  # the GAN's full batches from the global RNG
    torch.manual_seed(3)
    ours = index_batches(103, 8, min_size=8)
    assert len(ours) == len(old) == 12 and all(torch.equal(torch.tensor(b), o) for b, o in zip(ours, old))


def test_the_torch_rng_path_equals_torch_randperm():
    g = torch.Generator().manual_seed(12)
    ref = torch.randperm(50, generator=g).split(8)
    g = torch.Generator().manual_seed(12)
    ours = index_batches(50, 8, generator=g)
    assert len(ours) == len(ref) and all(torch.equal(torch.tensor(b), r) for b, r in zip(ours, ref))


@pytest.mark.parametrize("maker", ["seed + epoch", "torch global RNG"])
def test_fit_resumed_mid_epoch_sees_the_same_batches(tmp_path, maker):
    from kexue.train.loop import fit

    batches = (lambda e: index_batches(7, 3, 11 + e)) if maker == "seed + epoch" else \
        (lambda e: length_batches(LENGTHS[:7], 3, window=1))

    def run(folder, crash_at=None):
        seen = []
        model = nn.Linear(1, 1)

        def loss_fn(m, batch):
            seen.append(tuple(batch))
            return m(torch.tensor([[float(sum(batch))]])).sum()

        def crash(state):
            if state.step == crash_at:
                raise RuntimeError("crash")

        try:
            fit(model, loss_fn, batches, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), steps=10,
                checkpoint_dir=folder, checkpoint_every=2, callbacks=[crash], eval_every=1, progress=False, seed=3)
        except RuntimeError:
            pass
        return seen

    straight = run(tmp_path / "straight")
    first = run(tmp_path / "resumed", crash_at=5)  # epoch 2 (3 batches an epoch), after the step-4 checkpoint
    rest = run(tmp_path / "resumed")
    assert len(straight) == 10 and len(first) == 5 and first[:4] + rest == straight
    assert len(set(straight[:3])) == 3 and straight[:3] != straight[3:6]  # epochs reshuffled


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        index_batches(5, 0)
    with pytest.raises(ValueError, match="not both"):
        index_batches(5, 2, 1, generator=torch.Generator())
    with pytest.raises(ValueError, match="shuffle=False"):
        index_batches(5, 2, 1, shuffle=False)
    with pytest.raises(ValueError, match="min_size 3 > batch_size 2"):
        length_batches([1, 2], 2, min_size=3)
    with pytest.raises(ValueError, match="window"):
        length_batches([1, 2], 2, shuffle=False, window=4)
    with pytest.raises(ValueError, match="seed must be an integer"):
        index_batches(5, 2, seed=1.5)


def test_random_batches_draw_with_replacement_from_the_global_rng():
    data = torch.arange(10)
    torch.manual_seed(0)
    a = list(RandomBatches(data, 4, 3))
    torch.manual_seed(0)
    ref = [data[torch.randint(0, 10, (4,))] for _ in range(3)]
    assert len(RandomBatches(data, 4, 3)) == 3 and all(torch.equal(x, y) for x, y in zip(a, ref))


@pytest.mark.parametrize("n, size, under", [(1234, 32, 16), (1234, 32, 19), (1234, 32, 1), (66, 32, 16), (20, 32, 16),
                                            (64, 32, 16), (0, 32, 16)])
def test_a_small_remainder_joins_the_batch_before_it(n, size, under):
    """A last batch under ``merge_under`` items (1234 = 38·32 + 18; 66 = 2·32 + 2) merges into the one before:
    every item still once per epoch, no batch smaller than ``merge_under`` unless it is the only one."""
    rest = n % size
    merged = n > size and 0 < rest < under
    want = -(-n // size) - merged
    lengths = LENGTHS[:n] if n <= len(LENGTHS) else LENGTHS
    for shuffle in (True, False):
        rng = {"seed": 4} if shuffle else {}
        for batches in (index_batches(n, size, shuffle=shuffle, merge_under=under, **rng),
                        length_batches(lengths, size, shuffle=shuffle, merge_under=under, **rng)):
            sizes = sorted(map(len, batches))
            assert once_each(batches, n) and len(batches) == want == count_batches(n, size, merge_under=under)
            if merged:
                assert sizes == [size] * (want - 1) + [size + rest]
            else:
                assert sizes == sorted([size] * (n // size) + ([rest] if rest else []))
    assert index_batches(66, 32, shuffle=False, merge_under=16) == [list(range(32)), list(range(32, 66))]
    with pytest.raises(ValueError, match="merge_under 33 > batch_size 32"):
        index_batches(10, 32, merge_under=33)
