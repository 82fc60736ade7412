"""The generation flags of ``kexue predict`` / ``kexue chat`` are exactly the user options of
GenerationOptions (one flag per field, its help and check), and ``kexue serve`` checks request options
through the same fields."""
import argparse

import pytest

from kexue.cli.use import chat_parser, generation_options, predict_parser
from kexue.generation import GenerationOptions
from kexue.recipes.args import UsageError
from kexue.recipes.predictor import Predictor

USER = GenerationOptions.user_options()


def generation_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    group = next(g for g in parser._action_groups if g.title.startswith("generation"))
    return {a.dest: a for a in group._group_actions}


@pytest.mark.parametrize("make", [predict_parser, chat_parser])
def test_flags_are_the_user_fields(make):
    actions = generation_actions(make())
    assert tuple(actions) == USER
    for name, action in actions.items():
        assert action.option_strings == [GenerationOptions.flag(name)]
        assert action.default is None  # unset: the model's own setting
        assert action.help.startswith(GenerationOptions.help(name)) and "default" in action.help


def test_flags_read_values_through_the_fields(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    argv = [str(tmp_path), "x", "--top-k", "0", "--top-p", "1", "--seed", "3", "--max-new-tokens", "0"]
    args = predict_parser().parse_intermixed_args(argv)
    assert generation_options(args) == {"max_new_tokens": 0, "top_k": 0, "top_p": 1.0, "seed": 3}
    for flag, text in [("--top-p", "1.5"), ("--temperature", "0"), ("--num-beams", "0"), ("--top-k", "2.5")]:
        name = flag[2:].replace("-", "_")
        with pytest.raises(ValueError) as field_error:
            GenerationOptions.parse(name, text)
        with pytest.raises(UsageError) as flag_error:
            predict_parser().parse_intermixed_args([str(tmp_path), "x", flag, text])
        assert f"argument {flag}: {field_error.value}" in str(flag_error.value)


class Echo(Predictor):
    task, options = "echo", ("max_new_tokens", "top_k")

    def check(self, item):
        if not isinstance(item, str):
            raise ValueError("an echo input is a string")
        return item

    def _predict(self, items, **options):
        return [{"item": x, "options": options} for x in items]


def test_serve_checks_request_options_through_the_fields():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from kexue.cli.serve import create_app

    with TestClient(create_app(Echo(), "echo", max_wait_ms=1)) as client:
        r = client.post("/predict", json={"inputs": ["a"], "options": {"top_k": "5", "max_new_tokens": 0}})
        assert r.status_code == 200 and r.json()["outputs"] == [
            {"item": "a", "options": {"top_k": 5, "max_new_tokens": 0}}]
        for options, words in [({"num_beams": 2}, "does not apply to echo models"), ({"top_k": -1}, "top_k=-1:"),
                               ({"top_k": True}, "option top_k: expected a number")]:
            r = client.post("/predict", json={"inputs": ["a"], "options": options})
            assert r.status_code == 400 and words in r.json()["error"], r.json()
