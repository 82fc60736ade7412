"""The predictors' options are GenerationOptions fields: each task takes exactly its share of the user
options (so predictors, command line and library cannot drift apart), values are read and checked by
the fields, and a predict call's options are the caller's over the folder's settings over the task's."""
import pytest

from kexue.generation import GenerationOptions
from kexue.recipes import TASKS
from kexue.recipes.predictor import Predictor
from kexue.recipes.sampling import SAMPLING_ONLY, task_options

USER = GenerationOptions.user_options()


def test_each_task_takes_its_share_of_the_user_options():
    expected = {"generate": USER, "poem": USER, "dialogue": tuple(n for n in USER if n != "num_samples"),
                "reading": ("max_new_tokens",), "multimodal": ("seed", "max_new_tokens")}
    for task, recipe in TASKS.items():
        options = recipe.predictor_class().options
        assert set(options) <= set(USER), task
        assert tuple(options) == expected.get(task, ()), task


def test_a_predictor_cannot_declare_an_option_that_is_not_a_field():
    with pytest.raises(TypeError, match="'topk' is not a user option"):
        type("Bad", (Predictor,), {"options": ("topk",)})


class Echo(Predictor):
    task, options = "echo", ("max_new_tokens", "top_k", "top_p")

    def check(self, item):
        return item

    def _predict(self, items, **options):
        return [{"item": x, "options": options} for x in items]


def test_options_are_read_and_checked_by_their_fields():
    p = Echo()
    assert p.predict(["a"], top_k="5", top_p=1, max_new_tokens=0) == [
        {"item": "a", "options": {"top_k": 5, "top_p": 1.0, "max_new_tokens": 0}}]
    for options, words in [({"num_beams": 2}, "option 'num_beams' does not apply to echo models"),
                           ({"top_k": -1}, "^top_k=-1: must be an int >= 0"),
                           ({"top_p": 1.5}, r"^top_p=1.5: must be in \(0, 1\]"),
                           ({"top_k": "x"}, "^top_k='x': expected an integer"),
                           ({"top_k": True}, "option top_k: expected a number"),
                           ({"max_new_tokens": None}, "option max_new_tokens: expected a number")]:
        with pytest.raises(ValueError, match=words):
            p.predict(["a"], **options)


def test_a_call_is_the_callers_options_over_the_folders_over_the_tasks():
    saved = {"num_samples": 2, "top_k": 8, "max_new_tokens": 38, "seed": 4}
    o = task_options({}, saved, min_new_tokens=8)
    assert (o.search, o.num_samples, o.top_k, o.max_new_tokens, o.seed, o.min_new_tokens) == ("sampling", 2, 8, 38, 4, 8)
    o = task_options({"top_k": 3, "max_new_tokens": 10}, saved, min_new_tokens=8)
    assert (o.top_k, o.max_new_tokens, o.seed) == (3, 10, 4)
    # beam search: the folder's sampling settings drop out, its other ones stay; a caller's sampling option is refused
    o = task_options({"num_beams": 3}, saved, min_new_tokens=8)
    assert (o.search, o.num_samples, o.top_k, o.seed, o.max_new_tokens) == ("beam search", 2, None, None, 38)
    with pytest.raises(ValueError, match="^top_k=5: not an option of beam search"):
        task_options({"num_beams": 3, "top_k": 5}, saved)
    # sampling is seeded 0 unless a seed is given: same input, same output
    assert task_options({}, {"top_k": 8}).seed == 0
    # sample=None (a plain generator): greedy unless a sampling option is given
    assert task_options({}, {"max_new_tokens": 64}, sample=None).search == "greedy decoding"
    for name, value in [("temperature", 0.7), ("top_k", 4), ("top_p", 0.9), ("seed", 1)]:
        assert task_options({name: value}, sample=None).search == "sampling"
    assert set(SAMPLING_ONLY) == {"temperature", "top_k", "top_p", "seed"}
    with pytest.raises(ValueError, match="^num_samples=2: greedy decoding gives one text"):
        task_options({"num_samples": 2}, sample=None)
    with pytest.raises(ValueError, match="^min_new_tokens=8: must not exceed max_new_tokens=5"):
        task_options({"max_new_tokens": 5}, saved, min_new_tokens=8)


def test_task_options_beside_the_generation_options():
    """A task may take options of its own (multimodal: the flow's Euler ``steps``), read by their type
    function; unknown names are still refused naming every option the task takes."""
    from kexue.recipes import args as at

    class Steps(Echo):
        task, options, task_options = "steps", ("seed",), {"steps": at.positive_int}

    p = Steps()
    assert p.predict([1], steps="3", seed=2) == [{"item": 1, "options": {"steps": 3, "seed": 2}}]
    with pytest.raises(ValueError, match="option steps: must be"):
        p.predict([1], steps=0)
    with pytest.raises(ValueError, match=r"'top_k' does not apply to steps models \(options: seed, steps\)"):
        p.predict([1], top_k=3)
