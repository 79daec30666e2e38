"""The reward interface: Sample parsing, registry, weighted composite, failures, worker timeouts."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
import yaml

from lit_qwen3.rewards import (
    CompositeReward,
    Reward,
    RewardResult,
    Sample,
    available_rewards,
    build_reward,
    register_reward,
)
from lit_qwen3.rewards import base as rewards_base

# -- small rewards used below (module level so worker processes can unpickle them) -------------


class AnswerLength(Reward):
    """Score = number of characters in the answer."""

    def score(self, sample: Sample) -> RewardResult:
        return RewardResult(float(len(sample.answer)), {"length": len(sample.answer)})


class Constant(Reward):
    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def score(self, sample: Sample) -> RewardResult:
        return RewardResult(self.value)


class Behaves(Reward):
    """Does what the sample's metadata["do"] says: ok, raise, nan, sleep, stuck, die."""

    run_in_worker = True

    def score(self, sample: Sample) -> RewardResult:
        action = sample.metadata.get("do", "ok")
        if action == "raise":
            raise ZeroDivisionError("boom on purpose")
        if action == "nan":
            return RewardResult(float("nan"))
        if action == "sleep":  # interruptible: the worker's interval timer stops it
            time.sleep(60)
        if action == "swallow":  # reward code that catches Exception must not hide a timeout
            try:
                time.sleep(60)
            except Exception:
                return RewardResult(1.0, {"swallowed": True})
        if action == "stuck":  # deaf to SIGALRM, like code stuck in C: the parent must kill it
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(60)
        if action == "die":
            os._exit(3)
        return RewardResult(1.0, {"pid": os.getpid()})


class NeedsReference(Reward):
    requires = ("reference",)

    def score(self, sample: Sample) -> RewardResult:
        return RewardResult(1.0)


def make_sample(answer: str = "42", **metadata) -> Sample:
    return Sample(
        prompt=[{"role": "user", "content": "q"}],
        completion=f"<think>\nt\n</think>\n\n{answer}",
        thinking="t",
        answer=answer,
        well_formed=True,
        thinking_mode=True,
        metadata=metadata,
    )


# -- Sample ------------------------------------------------------------------------------------


def test_sample_from_completion_parses_thinking_answer_and_last_flag():
    prompt = [
        {"role": "user", "content": "Hi /no_think"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 2+2? /think"},
    ]
    sample = Sample.from_completion(
        prompt, "<think>\n2+2=4\n</think>\n\nThe answer is 4.", metadata={"reference": "4"}
    )
    assert sample.thinking == "2+2=4"
    assert sample.answer == "The answer is 4."
    assert sample.well_formed
    assert sample.thinking_mode  # the last flag (/think) wins
    assert sample.metadata == {"reference": "4"}
    forced = Sample.from_completion(prompt, "4", enable_thinking=False)
    assert not forced.thinking_mode
    assert forced.thinking is None and forced.answer == "4" and not forced.well_formed


def test_sample_from_completion_when_the_prompt_opened_the_think_block():
    prompt = [{"role": "user", "content": "2+2?"}]
    sample = Sample.from_completion(prompt, "2+2=4\n</think>\n\n4", opened_in_prompt=True)
    assert (sample.thinking, sample.answer, sample.well_formed) == ("2+2=4", "4", True)


def test_sample_rejects_non_string_completion_and_bad_prompt():
    with pytest.raises(TypeError, match="completion must be a str.*got list"):
        Sample.from_completion([{"role": "user", "content": "q"}], [1, 2, 3])
    with pytest.raises(TypeError, match="prompt must be a list of chat messages, got str"):
        Sample.from_completion("What is 2+2?", "4")
    with pytest.raises(TypeError, match=r"prompt\[0\] must be a dict"):
        Sample.from_completion([("user", "q")], "4")
    with pytest.raises(TypeError, match="Sample.completion must be a str, got bytes"):
        Sample([], b"4", None, "4", False, True)


# -- registry ----------------------------------------------------------------------------------


def test_builtin_rewards_are_registered():
    names = available_rewards()
    assert {"math", "code", "format"} <= set(names)
    assert isinstance(build_reward("math"), Reward)


def test_unknown_reward_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown reward 'maths'; known rewards: .*code.*math"):
        build_reward("maths")


def test_bad_kwargs_name_the_reward():
    with pytest.raises(TypeError, match=r"reward 'math': bad kwargs \['bogus'\]"):
        build_reward("math", bogus=1)


def test_register_reward_refuses_a_second_class_under_a_taken_name():
    @register_reward("test_only_constant")
    class First(Constant):
        pass

    try:
        assert isinstance(build_reward("test_only_constant", value=2.0), First)
        assert First.name == "test_only_constant"
        with pytest.raises(ValueError, match="already registered by .*First"):

            @register_reward("test_only_constant")
            class Second(Constant):
                pass

        with pytest.raises(TypeError, match="decorates Reward subclasses"):
            register_reward("test_only_other")(dict)
    finally:
        rewards_base._REGISTRY.pop("test_only_constant", None)


# -- composite: weights, specs, routing, bad input ---------------------------------------------


def test_weighted_sum_and_info():
    composite = CompositeReward(
        [
            {"reward": AnswerLength(), "weight": 0.5, "label": "length"},
            {"reward": Constant(2.0), "weight": -1.0, "label": "const"},
        ],
        num_workers=0,
    )
    results = composite.score_batch([make_sample("abcd"), make_sample("")])
    # 0.5 * 4 + (-1.0) * 2.0 = 0.0 ; 0.5 * 0 + (-1.0) * 2.0 = -2.0
    assert [r.score for r in results] == [0.0, -2.0]
    assert results[0].info["scores"] == {"length": 4.0, "const": 2.0}
    assert results[0].info["details"]["length"] == {"length": 4}
    assert "errors" not in results[0].info


def test_composite_from_yaml_specs():
    specs = yaml.safe_load(
        """
        - name: format
          weight: 0.2
        - name: math
          weight: 1.0
          kwargs: {require_boxed: true}
          in_worker: false
        """
    )
    composite = CompositeReward(specs, num_workers=0)
    assert composite.labels == ["format", "math"]
    assert composite.components[1].reward.require_boxed
    sample = Sample.from_completion(
        [{"role": "user", "content": "1/2 as a fraction?"}],
        "<think>\nhalf\n</think>\n\nIt is $\\boxed{\\frac{1}{2}}$.",
        metadata={"reference": "0.5"},
    )
    (result,) = composite.score_batch([sample])
    # format 1.0 (one well-formed, non-empty block in thinking mode) * 0.2 + math 1.0 * 1.0
    assert result.score == pytest.approx(1.2)
    assert result.info["scores"] == {"format": 1.0, "math": 1.0}
    # {name: weight} shorthand
    assert CompositeReward({"format": 1.0, "math": 0.5}, num_workers=0).labels == [
        "format",
        "math",
    ]


@pytest.mark.parametrize(
    ("specs", "error", "match"),
    [
        (
            [{"name": "math", "wieght": 1}],
            ValueError,
            r"rewards\[0\] has unknown key\(s\) \['wieght'\]",
        ),
        ([{"name": "math", "weight": "high"}], TypeError, r"rewards\[0\]\.weight must be a number"),
        ([{"name": "math"}, {"name": "math"}], ValueError, "label 'math' is used twice"),
        ([{"weight": 1.0}], ValueError, "exactly one of 'name'"),
        ([], ValueError, "at least one reward"),
        ("math", TypeError, "list of specs"),
        ([{"name": "nope"}], ValueError, "unknown reward 'nope'; known rewards:"),
    ],
)
def test_bad_specs_are_rejected(specs, error, match):
    with pytest.raises(error, match=match):
        CompositeReward(specs, num_workers=0)


def test_bad_composite_options_are_rejected():
    with pytest.raises(ValueError, match="mp_context must be 'forkserver' or 'spawn'"):
        CompositeReward([Constant()], mp_context="fork")
    with pytest.raises(ValueError, match="timeout must be a positive"):
        CompositeReward([Constant()], timeout=0)


def test_missing_metadata_is_a_clear_error_not_a_zero():
    composite = CompositeReward([NeedsReference()], num_workers=0)
    with pytest.raises(
        ValueError,
        match=r"samples\[1\]: reward 'NeedsReference' needs metadata key\(s\) \['reference'\]",
    ):
        composite.score_batch([make_sample(reference="1"), make_sample(tests=[])])
    math_composite = CompositeReward([{"name": "math"}], num_workers=0)
    with pytest.raises(ValueError, match=r"reward 'math' needs metadata key\(s\) \['reference'\]"):
        math_composite.score_batch([make_sample()])
    with pytest.raises(TypeError, match=r"samples\[0\] must be a Sample, got str"):
        math_composite.score_batch(["42"])


def test_routing_scores_each_sample_with_its_own_rewards():
    composite = CompositeReward(
        [
            {"reward": AnswerLength(), "label": "length"},
            {"reward": Constant(10.0), "label": "const"},
        ],
        num_workers=0,
    )
    both, only_const = composite.score_batch(
        [make_sample("abc"), make_sample("abc", rewards=["const"])]
    )
    assert both.score == 13.0 and only_const.score == 10.0
    assert only_const.info["scores"] == {"const": 10.0}
    with pytest.raises(ValueError, match=r"names \['lenght'\], not in this composite"):
        composite.score_batch([make_sample(rewards=["lenght"])])


def test_in_process_failures_score_zero_count_and_log(caplog):
    composite = CompositeReward(
        [{"reward": Behaves(), "label": "behaves", "in_worker": False}, Constant(0.5)],
        num_workers=0,
    )
    samples = [make_sample(), make_sample(do="raise"), make_sample(do="nan")]
    with caplog.at_level(logging.WARNING, logger="lit_qwen3.rewards"):
        results = composite.score_batch(samples)
    # ok: 1.0 + 0.5 ; raise and nan: 0 + 0.5
    assert [r.score for r in results] == [1.5, 0.5, 0.5]
    assert results[1].info["errors"] == {"behaves": "ZeroDivisionError: boom on purpose"}
    assert "not finite" in results[2].info["errors"]["behaves"]
    assert composite.error_counts == {"behaves": 2, "Constant": 0}
    assert "reward 'behaves' failed on sample 1: ZeroDivisionError: boom on purpose" in caplog.text


# -- worker processes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_composite():
    composite = CompositeReward(
        [{"reward": Behaves(), "label": "behaves"}],
        timeout=1.0,
        kill_grace=1.0,
        num_workers=2,
    )
    yield composite
    composite.close()


def test_workers_score_in_other_processes(worker_composite):
    results = worker_composite.score_batch([make_sample(), make_sample(), make_sample(do="raise")])
    pids = {r.info["details"]["behaves"]["pid"] for r in results[:2]}
    assert os.getpid() not in pids
    assert [r.score for r in results] == [1.0, 1.0, 0.0]
    assert "ZeroDivisionError" in results[2].info["errors"]["behaves"]


def test_worker_timeouts_score_zero_and_the_batch_goes_on(worker_composite):
    before = worker_composite.error_counts["behaves"]
    start = time.monotonic()
    results = worker_composite.score_batch(
        [make_sample(do="sleep"), make_sample(), make_sample(do="swallow"), make_sample()]
    )
    elapsed = time.monotonic() - start
    assert [r.score for r in results] == [0.0, 1.0, 0.0, 1.0]
    assert (
        "TimeoutError: reward 'behaves' took longer than 1s" in results[0].info["errors"]["behaves"]
    )
    assert "took longer" in results[2].info["errors"]["behaves"]  # not swallowed into a 1.0
    assert worker_composite.error_counts["behaves"] == before + 2
    assert elapsed < 10  # two 1 s timeouts on two workers, not 60 s sleeps


def test_stuck_worker_is_killed_and_replaced(worker_composite):
    start = time.monotonic()
    results = worker_composite.score_batch([make_sample(do="stuck"), make_sample(), make_sample()])
    assert time.monotonic() - start < 15
    assert [r.score for r in results] == [0.0, 1.0, 1.0]
    assert "worker process killed" in results[0].info["errors"]["behaves"]
    # the pool was rebuilt: the next batch works
    assert [r.score for r in worker_composite.score_batch([make_sample()])] == [1.0]


def test_dying_worker_fails_only_its_own_sample(worker_composite):
    results = worker_composite.score_batch(
        [make_sample(), make_sample(do="die"), make_sample(), make_sample()]
    )
    assert [r.score for r in results] == [1.0, 0.0, 1.0, 1.0]
    assert "worker process died" in results[1].info["errors"]["behaves"]
