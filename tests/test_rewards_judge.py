"""Generative judge: verdict parsing on real strings, prompt rendering, batched generation with a
tiny locally saved Qwen3 model, and a tiny judge taught to give verdicts end to end."""

from __future__ import annotations

import pytest
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from transformers import Qwen3ForCausalLM

from lit_qwen3.chat import EMPTY_THINKING
from lit_qwen3.models import tiny_qwen3_config
from lit_qwen3.rewards.base import Sample, build_reward
from lit_qwen3.rewards.judge import (
    GenerativeJudge,
    last_user_message,
    parse_verdict,
)

QUESTION = [{"role": "user", "content": "What is 2+2? /think"}]
SHORT_TEMPLATE = "Q: {question}\nRef: {reference}\nReply: {reply}"


def sample(answer: str, reference: str | None = "4", *, completion: str | None = None) -> Sample:
    metadata = {} if reference is None else {"reference": reference}
    text = completion if completion is not None else f"<think>\nadd\n</think>\n\n{answer}"
    return Sample.from_completion(QUESTION, text, metadata=metadata)


# --------------------------------------------------------------------------- parser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The reply matches the reference.\nScore: 7/10", 0.7),
        ("Score: 10/10", 1.0),
        ("score = 3", 0.3),  # no denominator: out of max_score=10
        ("Rating: **8** / 10", 0.8),
        ("Rating: [[9]]", 0.9),  # MT-Bench style
        ("[[4/5]]", 0.8),
        ("Score: 4 out of 5", 0.8),
        ("Final verdict: [[CORRECT]]", 1.0),
        ("The reply says 5, not 4. [[INCORRECT]]", 0.0),
        ("Verdict: correct", 1.0),
        # The last verdict wins: the judge first quotes a scale, then decides.
        ("Use Score: 10/10 for perfect answers. This one is off by one. Score: 2/10", 0.2),
        ("[[CORRECT]] would need 4; the reply says 5. [[INCORRECT]]", 0.0),
        # A thinking judge: verdicts inside <think> are ignored.
        ("<think>maybe Score: 9/10</think>\n\nScore: 1/10", 0.1),
        ("<think>Score: 9/10 ... still thinking", None),  # never closed: no verdict
        ("Score: 12/10", None),  # out of range
        ("Score: 0/0", None),
        ("The answer looks fine to me.", None),
        ("", None),
    ],
)
def test_parse_verdict(text, expected):
    got = parse_verdict(text)
    assert got == (None if expected is None else pytest.approx(expected))


def test_parse_verdict_max_score_and_type_error():
    assert parse_verdict("Score: 4", max_score=5) == pytest.approx(0.8)
    with pytest.raises(TypeError, match="expects a str"):
        parse_verdict(None)


def test_last_user_message_drops_flags():
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first /no_think"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "What is 2+2? /think"},
    ]
    assert last_user_message(prompt) == "What is 2+2?"
    with pytest.raises(ValueError, match="no user message"):
        last_user_message([{"role": "system", "content": "x"}])


def test_render_with_the_real_qwen3_template(qwen3_tokenizer):
    judge = GenerativeJudge(Qwen3ForCausalLM(_config(qwen3_tokenizer)), qwen3_tokenizer)
    text = judge.render(sample("The answer is 4."))
    # One user turn with the filled template, then a non-thinking generation prompt.
    assert text.startswith("<|im_start|>user\nYou are grading a reply")
    assert "[Question]\nWhat is 2+2?\n\n[Reference answer]\n4\n\n[Reply]\nThe answer is 4." in text
    assert "2+2? /think" not in text  # the policy's mode flag is not part of the question
    assert "\nadd\n" not in text  # nor is the policy's thinking
    assert text.endswith("<|im_start|>assistant\n" + EMPTY_THINKING)


# --------------------------------------------------------------------------- tiny models


def _config(tokenizer, **overrides):
    return tiny_qwen3_config(
        "toy-student",
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **overrides,
    )


def test_batched_left_padded_generation_equals_one_by_one(tmp_path, toy_tokenizer):
    # Large init so that a random model's greedy output depends on its input.
    torch.manual_seed(0)
    Qwen3ForCausalLM(_config(toy_tokenizer, initializer_range=0.5)).save_pretrained(tmp_path)
    toy_tokenizer.save_pretrained(tmp_path)
    judge = build_reward(
        "judge", model=str(tmp_path), prompt_template=SHORT_TEMPLATE, max_new_tokens=6, batch_size=3
    )
    assert judge._model is None  # loaded lazily, on first use
    replies = ["4", "five", "The answer is 4.", "2 2 2 2 2 2 2 2 2 2 2 2", "x"]
    samples = [sample(r) for r in replies]
    batched = judge.score_batch(samples)  # prompts of different lengths: 2 batches, left padded
    single = [judge.score(s) for s in samples]
    raws = [r.info["raw"] for r in batched]
    assert raws == [r.info["raw"] for r in single]
    assert len(set(raws)) > 1  # outputs really differ per prompt, so the check above can fail
    assert all(r.score == 0.0 and r.info["error"] == "unparsable verdict" for r in batched)


def test_tiny_judge_taught_to_grade_gives_parsed_verdicts(tmp_path, toy_tokenizer):
    """Teach a tiny model a verdict per reply, save it, judge from the directory: the verdict
    follows the reply, so the reply reaches the judge's prompt and the output gets parsed."""
    tok = toy_tokenizer
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(_config(tok))
    teacher = GenerativeJudge(model, tok, prompt_template=SHORT_TEMPLATE)
    cases = {"4": "Score: 9/10", "five": "Score: 1/10", "It is 4.": "Score: 9/10"}
    rows = []
    for reply, verdict in cases.items():
        prompt = tok(teacher.render(sample(reply)), add_special_tokens=False)["input_ids"]
        target = tok(verdict + tok.eos_token, add_special_tokens=False)["input_ids"]
        rows.append((prompt, target))
    width = max(len(p) + len(t) for p, t in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (prompt, target) in enumerate(rows):
        n = len(prompt) + len(target)
        ids[i, :n] = torch.tensor(prompt + target)
        labels[i, len(prompt) : n] = torch.tensor(target)
        mask[i, :n] = 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    judge = GenerativeJudge(
        tmp_path, prompt_template=SHORT_TEMPLATE, max_new_tokens=12, batch_size=2
    )
    samples = [sample(r) for r in cases] + [sample("", completion="<think>\nstill going")]
    results = judge.score_batch(samples)
    assert [r.score for r in results] == pytest.approx([0.9, 0.1, 0.9, 0.0])
    assert results[0].info == {"raw": "Score: 9/10"}
    assert results[-1].info["error"] == "empty answer"  # malformed: no answer, no generation


# --------------------------------------------------------------------------- bad input


def test_bad_input_errors(tmp_path, toy_tokenizer):
    model = Qwen3ForCausalLM(_config(toy_tokenizer))
    judge = GenerativeJudge(model, toy_tokenizer)
    with pytest.raises(ValueError, match=r"'judge' needs metadata key\(s\) \['reference'\]"):
        judge.score(sample("4", reference=None))
    with pytest.raises(
        ValueError, match=r"exactly the fields \{question\}.*\['answer', 'question'\]"
    ):
        GenerativeJudge(model, toy_tokenizer, prompt_template="{question} {answer}")
    with pytest.raises(ValueError, match="pass `tokenizer`"):
        GenerativeJudge(model)
    with pytest.raises(ValueError, match="max_new_tokens and batch_size must be >= 1"):
        GenerativeJudge(model, toy_tokenizer, batch_size=0)
    with pytest.raises(TypeError, match="model must be a directory or a PreTrainedModel"):
        GenerativeJudge(42)
    mutated = sample("4")
    mutated.answer = None  # Sample checks types at construction; the judge checks again
    with pytest.raises(TypeError, match="sample.answer must be a str, got NoneType"):
        judge.score(mutated)
    missing = GenerativeJudge(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere.*local directories only"):
        missing.score(sample("4"))
    no_template = toy_tokenizer.__class__.from_pretrained(_saved(tmp_path, toy_tokenizer))
    no_template.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        GenerativeJudge(model, no_template).score(sample("4"))
    with pytest.raises(ValueError, match=r"unknown reward 'judges'.*judge"):
        build_reward("judges", model=str(tmp_path))


def _saved(directory, tokenizer):
    tokenizer.save_pretrained(directory / "tok")
    return directory / "tok"
