"""The reward interface: Sample parsing, registry, weighted composite, failures, worker timeouts."""

from __future__ import annotations

import ast
import logging
import os
import signal
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
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


class RewardBug(BaseException):
    """Not an Exception: what a careless reward might raise."""


_HOARD: list[bytearray] = []


class Behaves(Reward):
    """Does what the sample's metadata["do"] says: ok, raise, nan, sleep, stuck, die, exit,
    interrupt, base_exception, hog (keep 300 MB), sigint (a real Ctrl-C to this process)."""

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
        if action == "exit":
            raise SystemExit(0)
        if action == "interrupt":
            raise KeyboardInterrupt
        if action == "base_exception":
            raise RewardBug("careless")
        if action == "hog":
            _HOARD.append(bytearray(b"x" * (300 << 20)))
        if action == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        with open("/proc/self/statm") as handle:
            rss_mb = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
        return RewardResult(1.0, {"pid": os.getpid(), "rss_mb": rss_mb})


class Returns(Reward):
    """Returns ``metadata["value"]`` as its score, whatever it is."""

    def score(self, sample: Sample) -> RewardResult:
        return RewardResult(sample.metadata["value"])


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


def test_an_every_query_reward_scores_routed_samples_too():
    """The toy general-RL rows route to their task's reward only; the flag-following reward must
    still score them (it scored none before ``every_query``: ThinkFollow fell in general RL)."""
    composite = CompositeReward(
        [
            {"reward": AnswerLength(), "label": "length", "every_query": True},
            {"reward": Constant(10.0), "label": "const"},
            {"reward": Constant(100.0), "label": "other"},
        ],
        num_workers=0,
    )
    (routed,) = composite.score_batch([make_sample("abc", rewards=["const"])])
    assert routed.info["scores"] == {"length": 3.0, "const": 10.0} and routed.score == 13.0
    with pytest.raises(TypeError, match=r"rewards\[0\].every_query must be true or false"):
        CompositeReward([{"reward": Constant(1.0), "every_query": "yes"}], num_workers=0)


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
    assert "must be a finite real number, got nan" in results[2].info["errors"]["behaves"]
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


# -- issue 13: rewards that raise anything, scores that are not numbers, recycled workers ----------


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("exit", "SystemExit: 0"),
        ("interrupt", "KeyboardInterrupt"),
        ("base_exception", "RewardBug: careless"),
    ],
)
def test_base_exceptions_from_a_reward_score_zero_in_process(action, message, caplog):
    composite = CompositeReward(
        [{"reward": Behaves(), "label": "behaves", "in_worker": False}, Constant(0.5)],
        num_workers=0,
    )
    with caplog.at_level(logging.WARNING, logger="lit_qwen3.rewards"):
        results = composite.score_batch([make_sample(), make_sample(do=action), make_sample()])
    assert [r.score for r in results] == [1.5, 0.5, 1.5]  # the others are still scored
    assert results[1].info["errors"]["behaves"] == message
    assert composite.error_counts == {"behaves": 1, "Constant": 0}
    assert f"reward 'behaves' failed on sample 1: {message}" in caplog.text


def test_a_real_ctrl_c_still_interrupts_in_process_scoring():
    composite = CompositeReward([{"reward": Behaves(), "in_worker": False}], num_workers=0)
    with pytest.raises(KeyboardInterrupt):
        composite.score_batch([make_sample(do="sigint")])
    assert composite.error_counts == {"Behaves": 0}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_base_exceptions_from_a_reward_score_zero_in_workers(worker_composite):
    before = worker_composite.error_counts["behaves"]
    results = worker_composite.score_batch(
        [make_sample(do="exit"), make_sample(do="interrupt"), make_sample(do="base_exception")]
        + [make_sample()]
    )
    assert [r.score for r in results] == [0.0, 0.0, 0.0, 1.0]
    errors = [r.info.get("errors", {}).get("behaves") for r in results]
    assert errors == ["SystemExit: 0", "KeyboardInterrupt", "RewardBug: careless", None]
    assert worker_composite.error_counts["behaves"] == before + 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0.9", "TypeError: score must be a finite real number, got str '0.9'"),
        (True, "TypeError: score must be a finite real number, got bool True"),
        (np.bool_(True), "TypeError: score must be a finite real number, got numpy.bool"),
        (None, "TypeError: score must be a finite real number, got NoneType None"),
        ([1.0], "TypeError: score must be a finite real number, got list [1.0]"),
        (Decimal("0.5"), "TypeError: score must be a finite real number, got decimal.Decimal"),
        (float("inf"), "ValueError: score must be a finite real number, got inf"),
        (float("nan"), "ValueError: score must be a finite real number, got nan"),
    ],
    ids=["str", "bool", "numpy_bool", "none", "list", "decimal", "inf", "nan"],
)
def test_a_score_must_be_a_finite_real_number(value, message):
    composite = CompositeReward([Returns()], num_workers=0)
    (result,) = composite.score_batch([make_sample(value=value)])
    assert result.score == 0.0 and result.info["errors"]["Returns"].startswith(message)
    assert composite.error_counts == {"Returns": 1}


@pytest.mark.parametrize("value", [1, np.float32(0.5), np.int64(2), Fraction(1, 4), -3.5])
def test_real_numbers_of_any_kind_are_scores(value):
    (result,) = CompositeReward([Returns()], num_workers=0).score_batch([make_sample(value=value)])
    assert result.score == float(value) and type(result.score) is float
    assert "errors" not in result.info


def test_workers_are_recycled_after_max_tasks():
    with CompositeReward(
        [{"reward": Behaves(), "label": "behaves"}],
        num_workers=1,
        timeout=5.0,
        max_tasks_per_worker=2,
    ) as composite:
        results = composite.score_batch([make_sample() for _ in range(5)])
        pids = [r.info["details"]["behaves"]["pid"] for r in results]
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        assert len(set(pids)) == 3 and composite.worker_recycles == 2
        assert [r.score for r in results] == [1.0] * 5


def test_workers_are_recycled_above_the_memory_limit():
    with CompositeReward(
        [{"reward": Behaves(), "label": "behaves"}],
        num_workers=1,
        timeout=20.0,
        max_tasks_per_worker=None,
        max_worker_memory_mb=250,
    ) as composite:
        hog, after, later = composite.score_batch(
            [make_sample(do="hog"), make_sample(), make_sample()]
        )
        details = [r.info["details"]["behaves"] for r in (hog, after, later)]
        assert details[0]["rss_mb"] > 250  # the hog's worker was over the limit...
        assert details[1]["pid"] != details[0]["pid"]  # ...so the next task ran in a new one
        assert details[1]["rss_mb"] < 250 and details[2]["pid"] == details[1]["pid"]
        assert composite.worker_recycles == 1


def test_bad_recycling_options_are_rejected():
    with pytest.raises(ValueError, match="max_tasks_per_worker must be a positive int or None"):
        CompositeReward([Constant()], max_tasks_per_worker=0)
    with pytest.raises(ValueError, match="max_worker_memory_mb must be a positive int or None"):
        CompositeReward([Constant()], max_worker_memory_mb=1.5)


def test_the_reward_interface_imports_neither_the_composite_nor_the_pool():
    # STYLE.md: the pool depends on the interface, never the reverse (no import circle)
    def imported(module: str) -> set[str]:
        tree = ast.parse(Path(rewards_base.__file__).with_name(f"{module}.py").read_text())
        return {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }

    assert not imported("base") & {
        "lit_qwen3.rewards.workers",
        "lit_qwen3.rewards.composite",
        "lit_qwen3.rewards.outcome",
    }
    assert "lit_qwen3.rewards.composite" not in imported("workers")
    assert "lit_qwen3.rewards.workers" not in imported("outcome")
