"""FusionDataModule: the stage-3 mix's shares, flags (user, system, none, multi-turn: the last
wins), cut-off thinking closed with the configured stop text, and its refusals."""

from __future__ import annotations

import json

import pytest

from lit_qwen3.chat import STOP_THINKING, STOP_THINKING_REPORT, split_thinking, thinking_enabled
from lit_qwen3.datamodules.arithmetic import ArithmeticTask
from lit_qwen3.datamodules.fusion import FusionDataModule, cut_reasoning, first_cut


@pytest.fixture(scope="module")
def thinking_file(tmp_path_factory):
    """Stand-in for rejection-sampled thinking replies: the toy task's own scratchpads."""
    task = ArithmeticTask(seed=3, max_digits=3, check=False, mul_fraction=0.0)
    path = tmp_path_factory.mktemp("fusion") / "thinking.jsonl"
    rows = [
        {"messages": task.messages(p, thinking=True), "answer": str(p.answer)}
        for p in task.problems(300)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _mix(thinking_file, **kwargs):
    settings = dict(thinking_data=str(thinking_file), size=600, val_size=0, seed=1)
    data = FusionDataModule(**{**settings, **kwargs})
    return data, data.build_mix(500, "train")


def test_shares_flags_and_the_last_flag_wins(thinking_file):
    data, rows = _mix(
        thinking_file,
        think_share=0.5,
        multi_turn_share=0.3,
        no_flag_share=0.4,
        system_flag_share=0.3,
        cut_share=0.0,
    )
    think = [
        r
        for r in rows
        if split_thinking(
            "<think>" + (r["messages"][-1].get("reasoning_content") or "") + "</think>"
        ).thinking
    ]
    assert abs(len(think) / len(rows) - 0.5) < 0.02
    for row in rows:
        messages, reply = row["messages"][:-1], row["messages"][-1]
        wants_thinking = bool(reply.get("reasoning_content"))
        assert thinking_enabled(messages) == wants_thinking  # flags, defaults and last-flag rule
    multi = [r for r in rows if sum(m["role"] == "user" for m in r["messages"]) == 2]
    assert 0.25 < len(multi) / len(rows) < 0.35
    assert any(r["messages"][0]["role"] == "system" for r in rows)
    unflagged = [
        r for r in rows if "/think" not in json.dumps(r) and "/no_think" not in json.dumps(r)
    ]
    assert unflagged and all(r["messages"][-1]["reasoning_content"] for r in unflagged)
    assert data.mix["train/think"] == pytest.approx(0.5, abs=0.02)
    assert data.mix["train/multi_turn"] == pytest.approx(0.3, abs=0.05)


def test_cut_thinking_is_closed_with_the_stop_text_at_uniform_points(thinking_file):
    _, rows = _mix(thinking_file, cut_share=1.0, cut_stop_text=STOP_THINKING_REPORT)
    cut = [
        r["messages"][-1]["reasoning_content"]
        for r in rows
        if r["messages"][-1].get("reasoning_content")
    ]
    sentence = STOP_THINKING_REPORT.split("</think>")[0].rstrip("\n")
    assert cut and all(text.endswith(sentence) for text in cut)
    kept = [len(text) - len(sentence) for text in cut]
    assert min(kept) <= 2 and max(kept) >= 25  # from (almost) nothing to (almost) everything
    assert cut_reasoning("7+9+0=16 6\n4+8+1=13 36", 11, "\n</think>\n\n") == "7+9+0=16 6"


def test_a_cut_keeps_some_thinking(thinking_file):
    """No /think row may teach an empty think block: every cut keeps a character of thinking
    (with the template's bare close, a cut at 0 left the block empty)."""
    bare = "\n</think>\n\n"  # the template's bare close: nothing of it stays in the block
    _, rows = _mix(thinking_file, size=6000, cut_share=1.0, cut_stop_text=bare)
    rows += _mix(thinking_file, size=6000, cut_share=1.0, cut_stop_text=bare, seed=2)[1]
    cut = [r["messages"][-1] for r in rows if "forced" in r["messages"][-1]]
    assert len(cut) > 400  # about a thousand scratchpads of ~30 characters: cuts at 0 did occur
    assert all(reply["reasoning_content"].strip() for reply in cut)
    assert first_cut("\n\n7+9=16") == 3 and first_cut("7+9=16") == 1


def test_rejection_sampling_re_answers_the_stage_one_queries(thinking_file, tmp_path, monkeypatch):
    from lit_qwen3.datamodules import fusion

    stage_one = [
        {
            "messages": [
                {"role": "user", "content": f"Q{i}: {i}+{i} /think"},
                {"role": "assistant", "content": f"\\boxed{{{2 * i}}}"},
            ],
            "answer": str(2 * i),
        }
        for i in range(5)
    ]
    path = tmp_path / "cold_start.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in stage_one))
    seen = []

    def fake_rejection_sample(model, queries, **kwargs):
        seen.extend(queries)
        return [], {"kept": 0, "queries": len(queries)}

    monkeypatch.setattr(fusion, "rejection_sample", fake_rejection_sample)
    data = FusionDataModule(
        tokenizer="toy",
        rejection_model="toy-student",
        rejection_queries=str(path),
        rejection_fallback=True,
        size=40,
        val_size=0,
    )
    data.thinking_rows(7, "train")
    assert [q["messages"] for q in seen] == [stage_one[i % 5]["messages"][:1] for i in range(7)]
    assert [q["answer"] for q in seen] == [str(2 * (i % 5)) for i in range(7)]
    seen.clear()
    data.thinking_rows(3, "val")  # validation stays on held-out toy problems
    assert not any(q["messages"][0]["content"].startswith("Q") for q in seen)


@pytest.mark.parametrize("stop", [STOP_THINKING_REPORT, STOP_THINKING], ids=["report", "qwen"])
def test_the_forced_stop_text_of_a_cut_reply_is_not_trained(thinking_file, stop):
    """The sampler writes the stop text at a budget: training on it would teach the model to
    stop thinking at random points on its own (measured: thinking got shorter after fusion).
    Every cut point counts, the very start (budget 0) too, where the template strips the
    block's leading newlines (a CI failure with Qwen's sentence, which starts with two)."""
    from lit_qwen3.ops.packing import tokenize_conversation

    data, rows = _mix(thinking_file, cut_share=1.0, cut_stop_text=stop)
    tokenizer = data.tokenizer
    sentence = stop.split("</think>")[0].strip()
    cut = [r for r in rows if r["messages"][-1].get("forced")]
    assert len(cut) > 200 and all(
        r["messages"][-1]["forced"].endswith(sentence + "\n</think>") for r in cut
    )
    at_start = [r for r in cut if r["messages"][-1]["reasoning_content"].strip("\n") == sentence]
    assert at_start  # the mix has cuts at the very start
    for row in cut:
        messages = row["messages"]
        example = tokenize_conversation(
            tokenizer, messages, enable_thinking=True, train_on_all_assistant_turns=False
        )
        ids, mask = example["input_ids"], example["loss_mask"]
        trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
        untrained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
        assert sentence not in trained and "</think>" not in trained
        assert sentence + "\n</think>" in untrained  # the prompt never holds it
        assert trained.endswith(messages[-1]["content"] + "<|im_end|>")  # the answer is trained
    reply = {"role": "assistant", "content": "3", "forced": "not in the reply"}
    with pytest.raises(ValueError, match="forced text"):
        tokenize_conversation(tokenizer, [{"role": "user", "content": "1+2"}, reply])


def test_a_mix_without_one_mode_is_refused(thinking_file):
    for share in (0.0, 1.0):
        with pytest.raises(ValueError, match="fusion mixes both modes"):
            FusionDataModule(thinking_data=str(thinking_file), think_share=share)
    with pytest.raises(ValueError, match="rejection_model"):
        FusionDataModule(tokenizer="toy")
    with pytest.raises(ValueError, match="</think>"):
        FusionDataModule(thinking_data=str(thinking_file), cut_stop_text="stop")


def test_non_thinking_digits_sets_the_direct_answers_operands(thinking_file):
    def operands(rows):
        import re

        direct = [r for r in rows if not r["messages"][-1].get("reasoning_content")]
        questions = [r["messages"][-2]["content"] for r in direct]
        return [len(n) for q in questions for n in re.findall(r"\d+", q)]

    _, default = _mix(thinking_file, toy_min_digits=3, toy_max_digits=4, toy_mul_fraction=0.0)
    assert set(operands(default)) == {3, 4}
    _, short = _mix(
        thinking_file,
        toy_min_digits=3,
        toy_max_digits=4,
        toy_mul_fraction=0.0,
        non_thinking_digits=[1, 2],
        multi_turn_share=0.0,
    )
    assert set(operands(short)) == {1, 2}
    with pytest.raises(ValueError, match="non_thinking_digits"):
        FusionDataModule(thinking_data=str(thinking_file), non_thinking_digits=(3, 2))


def test_rejection_sampling_keeps_verified_replies_of_the_policy(toy_policy):
    data = FusionDataModule(
        tokenizer=str(toy_policy),
        size=80,
        val_size=0,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        rejection_samples=2,
        rejection_max_new_tokens=64,
    )
    rows = data.thinking_rows(40, "train")
    from lit_qwen3.datamodules.arithmetic import verify

    for row in rows:
        reply = row["messages"][-1]
        assert reply["reasoning_content"] and verify(reply["content"], row["answer"])
    assert 0 < data.mix["train/rejection_kept"] <= 1
