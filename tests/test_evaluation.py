"""Evaluation helpers: mode flags, verifiers, and evaluate_mode on a tiny model."""

from __future__ import annotations

import pytest

from lit_qwen3.callbacks import PassAtK, ThinkingBudget
from lit_qwen3.chat import with_thinking_flag
from lit_qwen3.evaluation import evaluate_mode, resolve_verifier
from lit_qwen3.models import load_model
from lit_qwen3.rollout.generation import SamplingConfig


def test_with_thinking_flag_replaces_flags_on_the_last_user_message():
    messages = [
        {"role": "user", "content": "first /no_think"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "12+3 /think"},
    ]
    think = with_thinking_flag(messages, True)
    no_think = with_thinking_flag(messages, False)
    assert think[-1]["content"] == "12+3 /think"
    assert no_think[-1]["content"] == "12+3 /no_think"
    assert no_think[0]["content"] == "first /no_think" and messages[-1]["content"] == "12+3 /think"
    with pytest.raises(ValueError, match="at least one user message"):
        with_thinking_flag([{"role": "system", "content": "x"}], True)


def test_verifiers_check_the_answer_after_thinking():
    query = {"messages": [{"role": "user", "content": "2+2"}], "answer": "4"}
    arithmetic = resolve_verifier("arithmetic")
    assert arithmetic("<think>\n\\boxed{5}\n</think>\n\n\\boxed{4}", query)
    assert not arithmetic("<think>\n\\boxed{4}\n</think>\n\n\\boxed{5}", query)
    math = resolve_verifier("math")
    assert math("<think>\nhmm\n</think>\n\n$\\boxed{\\frac{8}{2}}$", query)
    assert not math("<think>\nhmm\n</think>\n\n\\boxed{3}", query)
    # Batched through worker processes: one verdict per completion, in order.
    verdicts = math.batch(["\\boxed{4}", "no answer", "<think>x</think>\\boxed{4.0}"], [query] * 3)
    assert verdicts == [True, False, True]
    with pytest.raises(ValueError, match="unknown reward"):
        resolve_verifier("no-such-verifier")


def test_evaluate_mode_counts_correct_samples_and_respects_the_budget(toy_tokenizer):
    model = load_model("toy-student", seed=0)
    queries = [
        {"messages": [{"role": "user", "content": f"{i}+1"}], "answer": str(i + 1)}
        for i in range(3)
    ]
    # A verifier that accepts everything: pass@k must then be 1 and accuracy 1.
    result = evaluate_mode(
        model,
        toy_tokenizer,
        queries,
        thinking=True,
        n_samples=2,
        ks=(1, 2),
        verifier=lambda text, q: True,
        sampling=SamplingConfig(max_new_tokens=12),
        batch_size=4,
    )
    assert result.correct.shape == (3, 2) and bool(result.correct.all())
    assert result.metrics["pass_at_1"] == 1.0 and result.metrics["pass_at_2"] == 1.0
    assert len(result.samples) == 6 and {s["mode"] for s in result.samples} == {"think"}
    # Only the first query's answers count: pass@1 = 1/3, pass@2 = 1/3.
    first = lambda text, q: q["answer"] == "1"  # noqa: E731
    result = evaluate_mode(
        model,
        toy_tokenizer,
        queries,
        thinking=False,
        n_samples=2,
        ks=(1, 2),
        verifier=first,
        sampling=SamplingConfig(max_new_tokens=8),
    )
    assert result.metrics["pass_at_1"] == pytest.approx(1 / 3)
    assert result.metrics["accuracy"] == pytest.approx(1 / 3)
    assert model.training  # evaluation restores the training mode


def test_evaluate_mode_rejects_bad_input(toy_tokenizer):
    model = load_model("toy-student")
    with pytest.raises(ValueError, match="no queries"):
        evaluate_mode(model, toy_tokenizer, [], thinking=True)
    query = [{"messages": [{"role": "user", "content": "1+1"}], "answer": "2"}]
    with pytest.raises(ValueError, match="smaller than the largest k=4"):
        evaluate_mode(model, toy_tokenizer, query, thinking=True, n_samples=2, ks=(1, 4))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: PassAtK(modes=["deep"]), "modes must be a non-empty subset"),
        (lambda: PassAtK(ks=[1, 8], n_samples=4), "smaller than the largest k=8"),
        (lambda: PassAtK(every_n_steps=-1), "every_n_steps must be >= 0"),
        (lambda: ThinkingBudget(budget=-1), "budget must be >= 0"),
        (lambda: ThinkingBudget(sweep=[4, -2]), "sweep budgets must be >= 0"),
        (lambda: ThinkingBudget(stop_thinking="stop now"), "must contain '</think>'"),
    ],
)
def test_callbacks_reject_bad_settings(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_callback_state_survives_a_checkpoint():
    callback = PassAtK()
    callback.last_step = 40
    restored = PassAtK()
    restored.load_state_dict(callback.state_dict())
    assert restored.last_step == 40
    budget = ThinkingBudget(sweep=[8])
    budget.last_sweep_step = 12
    other = ThinkingBudget(sweep=[8])
    other.load_state_dict(budget.state_dict())
    assert other.last_sweep_step == 12
