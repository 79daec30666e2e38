"""Public datasets' rows read as they are (lit_qwen3/formats.py): each format's rows, written
here, reach their stage's reader and score through their reward; a row that does not fit is one
error naming the file, the line and the field."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lit_qwen3.datamodules.conversations import ConversationDataModule, read_conversations
from lit_qwen3.datamodules.preference_pairs import read_preference_pairs
from lit_qwen3.queries import evaluation_rows, read_queries
from lit_qwen3.rewards import InstructionFollowingReward, Sample
from lit_qwen3.rewards.math_answer import MathReward

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "configs/qwen3/data"


def _write(tmp_path: Path, rows: list, name: str = "rows.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _one_query(tmp_path: Path, row: dict):
    (query,) = read_queries(_write(tmp_path, [row]))
    return query


# ----------------------------------------------------------------------------- math
@pytest.mark.parametrize(
    ("row", "reference"),
    [
        ({"problem": "1/3 halved?", "answer": "\\frac{1}{6}", "solution": "..."}, "\\frac{1}{6}"),
        ({"problem": "1/3 halved?", "solution": "It is $\\boxed{\\frac{1}{6}}$."}, "\\frac{1}{6}"),
        ({"question": "Pencils?", "answer": "3*12=<<3*12=36>>36\n#### 36"}, "36"),
        ({"Problem": "Remainder?", "Answer": "2", "ID": "2024-I-1"}, "2"),
        ({"problem": "9 squared?", "answer": 81}, "81"),
    ],
    ids=["deepscaler", "numina-boxed", "gsm8k", "aime-capitalised", "number"],
)
def test_math_rows_become_queries_scored_by_math_verify(tmp_path, row, reference):
    query = _one_query(tmp_path, row)
    assert query.messages == [{"role": "user", "content": next(iter(row.values()))}]
    assert query.metadata == {"reference": reference}
    assert query.rewards == ["math"] and query.domain == "math"
    reward = MathReward()
    right = Sample.from_completion(
        query.messages,
        f"<think>\nok\n</think>\n\n$\\boxed{{{reference}}}$",
        metadata=query.metadata,
    )
    wrong = Sample.from_completion(query.messages, "$\\boxed{7}$", metadata=query.metadata)
    assert reward.score(right).score == 1.0 and reward.score(wrong).score == 0.0


def test_numina_rows_with_an_answered_conversation_read_the_problem(tmp_path):
    row = {
        "problem": "Solve $2x = 8$.",
        "solution": "$x = \\boxed{4}$",
        "messages": [
            {"role": "user", "content": "Solve $2x = 8$."},
            {"role": "assistant", "content": "$x = \\boxed{4}$"},
        ],
    }
    query = _one_query(tmp_path, row)
    assert query.messages == [{"role": "user", "content": "Solve $2x = 8$."}]
    assert query.metadata["reference"] == "4"


# ----------------------------------------------------------------------------- code
def test_code_rows_map_onto_the_code_rewards_tests(tmp_path):
    rows = [
        {"question": "Sum.", "input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})},
        {
            "question": "add()",
            "input_output": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]},
        },
        {
            "question_content": "Double n.",
            "public_test_cases": json.dumps(
                [{"input": "4\n", "output": "8\n", "testtype": "stdin"}]
            ),
            "private_test_cases": "eJzLSM3JyVcozy/KSQEAGgQEXQ==",  # LCB: compressed, pickled
        },
        {
            "question_content": "class Solution: twice",
            "public_test_cases": json.dumps(
                [{"input": "3", "output": "6", "testtype": "functional"}]
            ),
            "metadata": json.dumps({"func_name": "twice"}),
        },
        {
            "text": "square(x)",
            "test_list": ["assert square(3) == 9"],
            "test_imports": ["import math"],
        },
        {"question": "is_even(n)", "test_cases": ["assert is_even(2) == True"]},
    ]
    queries = read_queries(_write(tmp_path, rows))
    assert [q.rewards for q in queries] == [["code"]] * 6
    assert [q.metadata["tests"] for q in queries] == [
        [{"input": "1 2\n", "output": "3\n"}],
        ["assert add(1, 2) == 3"],
        [{"input": "4\n", "output": "8\n"}],
        ["assert Solution().twice(3) == 6"],
        ["import math\nassert square(3) == 9"],
        ["assert is_even(2) == True"],
    ]
    assert queries[2].extra["skipped_tests"] == "private_test_cases"  # never unpickled


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")
def test_apps_rows_score_through_the_code_reward(tmp_path):
    from lit_qwen3.rewards.code import CodeReward

    stdin_row, call_row = read_queries(_write(tmp_path, [
        {"question": "Sum.", "input_output": {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3", "12"]}},
        {"question": "add", "input_output": {"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]}},
    ]))  # fmt: skip
    reward = CodeReward(sandbox={"wall_time_s": 2.0, "cpu_time_s": 1.0})
    program = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    function = "```python\ndef add(a, b):\n    return a + b\n```"
    for query, good, bad in (
        (stdin_row, program, "```python\nprint(0)\n```"),
        (call_row, function, "```python\ndef add(a, b):\n    return a - b\n```"),
    ):
        for text, expected in ((good, 1.0), (bad, 0.0)):
            sample = Sample.from_completion(query.messages, text, metadata=query.metadata)
            reward.check(sample)
            assert reward.score(sample).score == expected


# ----------------------------------------------------------------------------- instructions
def test_ifeval_and_rlvr_rows_score_through_the_instruction_reward(tmp_path):
    rows = [
        {
            "key": 1,
            "prompt": "Describe the sea without commas.",
            "instruction_id_list": ["punctuation:no_comma"],
            "kwargs": [{}],
        },
        {
            "messages": [{"role": "user", "content": "Describe the sea without commas."}],
            "ground_truth": "[{'instruction_id': ['punctuation:no_comma'], 'kwargs': [None]}]",
            "dataset": "ifeval",
        },
        {
            "messages": [{"role": "user", "content": "Describe the sea in few words."}],
            "ground_truth": json.dumps(
                {
                    "instruction_id": ["length_constraints:number_words"],
                    "kwargs": [{"relation": "less than", "num_words": 10, "keywords": None}],
                }
            ),
        },
        {"messages": [{"role": "user", "content": "2 + 2?"}], "ground_truth": "4"},
    ]
    ifeval, rlvr, words, answer = read_queries(_write(tmp_path, rows))
    assert ifeval.rewards == rlvr.rewards == words.rewards == ["instructions"]
    assert ifeval.metadata == rlvr.metadata
    assert words.metadata["kwargs"] == [{"relation": "less than", "num_words": 10}]
    assert answer.rewards == ["math"] and answer.metadata == {"reference": "4"}
    reward = InstructionFollowingReward(all_or_nothing=True)
    for query in (ifeval, rlvr, words):
        for text, expected in (("The sea is calm and blue.", 1.0), ("Wide, deep, old, " * 5, 0.0)):
            sample = Sample.from_completion(query.messages, text, metadata=query.metadata)
            assert reward.score(sample).score == expected


# ----------------------------------------------------------------------------- chat
def test_chat_rows_with_inline_or_sharegpt_thinking_train_on_the_reasoning(
    tmp_path, qwen3_tokenizer
):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "17+25?"},
                {"role": "assistant", "content": "<think>\nseven plus five\n</think>\n\n42"},
            ]
        },
        {
            "system": "Think step by step.",
            "conversations": [
                {"from": "user", "value": "9 squared?"},
                {
                    "from": "assistant",
                    "value": "<|begin_of_thought|>\n\nnine nines\n\n<|end_of_thought|>\n\n"
                    "<|begin_of_solution|>\n\n81\n\n<|end_of_solution|>",
                },
            ],
        },
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ]
    path = _write(tmp_path, rows)
    first, second, third = read_conversations(path)
    assert first["messages"][1] == {
        "role": "assistant",
        "content": "42",
        "reasoning_content": "seven plus five",
    }
    assert second["messages"][0] == {"role": "system", "content": "Think step by step."}
    assert second["messages"][2]["reasoning_content"] == "nine nines"
    assert second["messages"][2]["content"] == "81"
    assert [m["role"] for m in third["messages"]] == ["user", "assistant"]
    data = ConversationDataModule(qwen3_tokenizer, data=str(path), val_size=0, packing=False)
    data.setup("fit")
    text = ""
    for batch in data.train_dataloader():
        text += qwen3_tokenizer.decode(batch["labels"][batch["labels"] != -100].tolist())
    for piece in ("seven plus five", "42", "nine nines", "81", "Hello"):
        assert piece in text  # thinking and answers are trained on
    assert "17+25?" not in text and "begin_of_thought" not in text


def test_tool_dialogues_render_their_schemas_and_train_the_calls(tmp_path, qwen3_tokenizer):
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    row = {
        "tools": json.dumps([weather]),
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": "sunny, 18 C"},
            {"role": "assistant", "content": "Sunny and 18 C in Paris."},
        ],
    }
    path = _write(tmp_path, [row])
    (conversation,) = read_conversations(path)
    call = conversation["messages"][1]["tool_calls"][0]["function"]
    assert call["arguments"] == {"city": "Paris"}  # a JSON string read as the object it holds
    assert conversation["tools"] == [weather]
    data = ConversationDataModule(qwen3_tokenizer, data=str(path), val_size=0, packing=False)
    data.setup("fit")
    (batch,) = list(data.train_dataloader())
    ids = batch["input_ids"][0].tolist()
    whole = qwen3_tokenizer.decode(ids)
    trained = qwen3_tokenizer.decode(batch["labels"][batch["labels"] != -100].tolist())
    assert "<tools>" in whole and '"name": "get_weather"' in whole  # the schema, in the system turn
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in trained
    assert "Sunny and 18 C in Paris." in trained
    assert "sunny, 18 C" not in trained and "<tools>" not in trained


# ----------------------------------------------------------------------------- preferences
def test_preference_pairs_as_message_lists_or_hh_transcripts(tmp_path):
    rows = [
        {
            "prompt": "2+2?",
            "chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
            "rejected": [
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "5"},
            ],
        },
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: A color?\n\nAssistant: Blue.",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: A color?\n\nAssistant: No.",
        },
    ]
    ultra, hh = read_preference_pairs(_write(tmp_path, rows))
    assert (ultra.prompt, ultra.chosen, ultra.rejected) == (
        [{"role": "user", "content": "2+2?"}],
        "4",
        "5",
    )
    assert [m["role"] for m in hh.prompt] == ["user", "assistant", "user"]
    assert hh.prompt[-1]["content"] == "A color?" and (hh.chosen, hh.rejected) == ("Blue.", "No.")


# ----------------------------------------------------------------------------- errors
QUERY_ERRORS = [
    ({"title": "no question here"}, "'messages' must be a non-empty list"),
    ({"problem": "x", "solution": "no box here"}, "'solution' has no \\boxed{...} answer"),
    ({"question": "x", "answer": ["a"]}, "'answer' must be a string or a number"),
    ({"problem": "", "answer": "1"}, "'problem' must be a non-empty string"),
    (
        {"question": "x", "input_output": '{"inputs": ["1"], "outputs": []}'},
        "'input_output': 'inputs' and 'outputs' must be lists of the same length",
    ),
    ({"question": "x", "input_output": "{not json"}, "'input_output': neither JSON nor"),
    (
        {"question": "x", "input_output": {"fn_name": "f", "inputs": [1], "outputs": [2]}},
        "'input_output'.inputs[0] must be the list of the call's arguments",
    ),
    (
        {
            "question_content": "x",
            "public_test_cases": '[{"input": "1", "output": "2", "testtype": "functional"}]',
        },
        "'public_test_cases'[0]: a functional case needs metadata.func_name",
    ),
    ({"question": "x", "test_list": [3]}, "'test_list'[0] must be an assert string"),
    (
        {"text": "x", "test_list": ["assert f()"], "test_setup_code": "x = 1"},
        "'test_setup_code' is not supported",
    ),
    (
        {"messages": [{"role": "user", "content": "x"}], "ground_truth": '{"func_name": "f"}'},
        "'ground_truth' names open-instruct's IFEvalG function 'f'",
    ),
    (
        {
            "messages": [{"role": "user", "content": "x"}],
            "ground_truth": '{"instruction_id": ["a", "b"], "kwargs": [{}]}',
        },
        "'ground_truth' must hold 'instruction_id' and 'kwargs' lists of the same length",
    ),
]


@pytest.mark.parametrize(("row", "message"), QUERY_ERRORS)
def test_a_query_row_that_does_not_fit_names_file_line_and_field(tmp_path, row, message):
    good = {"problem": "1+1?", "answer": "2"}
    path = _write(tmp_path, [good, row])
    with pytest.raises(ValueError) as error:
        read_queries(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)


CHAT_ERRORS = [
    (
        {"conversations": [{"from": "robot", "value": "x"}]},
        "conversations[0].from is 'robot'",
    ),
    ({"conversations": [{"from": "human", "value": 3}]}, "conversations[0].value must be a string"),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "<think>never closed"},
            ]
        },
        "messages[1].content: '<think>' without its pair",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}],
                },
            ]
        },
        "messages[1].tool_calls[0].function.arguments: not a JSON object",
    ),
    (
        {"tools": [{"type": "function"}], "messages": [{"role": "user", "content": "x"}]},
        "tools[0] must be",
    ),
]


@pytest.mark.parametrize(("row", "message"), CHAT_ERRORS)
def test_a_chat_row_that_does_not_fit_names_file_line_and_field(tmp_path, row, message):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = _write(tmp_path, [good, row])
    with pytest.raises(ValueError) as error:
        read_conversations(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)


def test_a_preference_row_that_does_not_fit_names_file_line_and_field(tmp_path):
    row = {
        "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}],
        "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "y"}],
    }
    path = _write(tmp_path, [{"prompt": "p", "chosen": "x", "rejected": "y"}, row])
    with pytest.raises(ValueError, match=rf"^{path}:2: 'chosen' and 'rejected' differ"):
        read_preference_pairs(path)


# ----------------------------------------------------------------------------- evaluation
def test_evaluation_files_in_public_formats_feed_pass_at_k_and_the_report(tmp_path):
    from callbacks._evaluation import evaluation_queries  # noqa: PLC0415
    from lit_qwen3.recipe.report import ReportConfig, eval_queries

    path = _write(tmp_path, [
        {"id": 60, "problem": "Divisors of 36?", "answer": "9"},
        {"ID": "2024-I-2", "Problem": "2^10?", "Answer": "1024", "Solution": "..."},
        {"problem": "Half of 1/3?", "solution": "$\\boxed{\\frac16}$"},
    ], "aime.jsonl")  # fmt: skip
    rows = evaluation_rows(path)
    assert [r["answer"] for r in rows] == ["9", "1024", "\\frac16"]
    assert rows[0]["messages"] == [{"role": "user", "content": "Divisors of 36?"}]
    assert evaluation_queries(None, str(path), 2) == rows[:2]  # PassAtK(queries="aime.jsonl")
    config = ReportConfig(data=str(path), num_queries=2)
    assert eval_queries(config) == rows[:2] and config.checker() == "math"
    assert ReportConfig().checker() == "arithmetic"  # the toy report is unchanged


def test_the_shipped_example_rows_read_in_every_format():
    assert len(read_queries(EXAMPLES / "math_rl.jsonl")) == 8
    assert {q.rewards[0] for q in read_queries(EXAMPLES / "general_rl.jsonl")} == {
        "math",
        "instructions",
    }
    assert all(q.metadata["tests"] for q in read_queries(EXAMPLES / "code_rl.jsonl"))
    assert len(read_conversations(EXAMPLES / "chat_sft.jsonl")) == 8
    assert len(read_conversations(EXAMPLES / "tool_sft.jsonl")) == 2
    assert len(read_preference_pairs(EXAMPLES / "preference.jsonl")) == 4
    assert [r["answer"] for r in evaluation_rows(EXAMPLES / "aime_eval.jsonl")][:2] == ["9", "55"]


def test_public_chat_rows_train_a_qwen3_shaped_model_one_step(tmp_path, qwen3_tokenizer_dir):
    import lightning as L
    import torch

    from lit_qwen3.models import load_model, save_qwen3_shaped
    from lit_qwen3.stages import ColdStartSFT

    shape = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    shape |= {"num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 64}
    model_dir = save_qwen3_shaped(tmp_path / "tiny", qwen3_tokenizer_dir, **shape)
    rows = [
        json.loads(line) for p in ("chat_sft", "tool_sft") for line in open(EXAMPLES / f"{p}.jsonl")
    ]
    data_path = _write(tmp_path, rows)  # ShareGPT, inline <think>, OpenThoughts, tool calls
    module = ColdStartSFT(model=str(model_dir), output_dir=str(tmp_path / "out"))
    data = ConversationDataModule(
        str(model_dir), data=str(data_path), val_size=0, packing=True, max_tokens_per_batch=4096
    )
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss) and loss > 0
    before = load_model(str(model_dir)).state_dict()
    after = module.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # one AdamW step moved it
