"""A saved folder's task head loads through the one strict-load rule (``check_fit``): a head file that lacks a
tensor, holds one the head does not have, or holds one of another shape is refused by one CheckpointError
naming all three; a fitting one loads every tensor."""
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kexue.models import CheckpointError
from kexue.recipes.folder import HEAD_FILE, head_state, load_head


class Task(nn.Module):
    def __init__(self, labels: int):
        super().__init__()
        self.encoder = nn.Linear(4, 4)  # stands for the Transformer, loaded from model.safetensors
        self.classifier = nn.Linear(4, labels)
        self.crf = nn.Parameter(torch.zeros(labels, labels))


def test_a_head_that_does_not_fit_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    trained = Task(3)
    head = head_state(trained, "encoder")
    assert set(head) == {"classifier.weight", "classifier.bias", "crf"}
    save_file(head, str(tmp_path / HEAD_FILE))
    fresh = load_head(tmp_path, Task(3), "encoder")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in head.items())
    bad = {"classifier.weight": head["classifier.weight"][:2].contiguous(), "crf": head["crf"],
           "pooler.weight": torch.zeros(2)}
    save_file(bad, str(tmp_path / HEAD_FILE))
    with pytest.raises(CheckpointError) as err:
        load_head(tmp_path, Task(3), "encoder")
    report = err.value.report
    assert str(err.value).startswith(f"{tmp_path / HEAD_FILE} does not fit the task head: missing (1): classifier.bias")
    assert report.missing == ["classifier.bias"] and report.unexpected == ["pooler.weight"]
    assert report.mismatched == ["classifier.weight checkpoint [2, 4] vs model [3, 4]"]
