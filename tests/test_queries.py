"""RL query rows and QueryDataModule: parsing, IFEval rows, modes, errors with file:line."""

from __future__ import annotations

import json

import pytest

from lit_qwen3.datamodules.queries import QueryDataModule
from lit_qwen3.queries import Query, check_reward_names, encode_query, parse_query, read_queries
from lit_qwen3.tokenizer import build_toy_tokenizer


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_a_row_becomes_a_query_with_reward_metadata_and_routing():
    query = parse_query(
        {
            "messages": [{"role": "user", "content": "347+589"}],
            "answer": 936,
            "reward": {"names": ["arithmetic"], "tolerance": 0},
            "domain": "addition",
            "mode": "no_think",
            "pass_rate": 0.25,
        },
        "q.jsonl:1",
    )
    assert query.reward_metadata() == {
        "tolerance": 0,
        "reference": "936",
        "rewards": ["arithmetic"],
    }
    assert query.domain == "addition" and query.extra == {"pass_rate": 0.25}
    assert query.default_thinking() is False
    assert query.messages_for(False)[-1]["content"] == "347+589 /no_think"
    assert query.source == "q.jsonl:1"


def test_ifeval_rows_are_read_as_they_are():
    row = {
        "key": 1000,
        "prompt": "Write a haiku. Do not use commas.",
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
    }
    query = parse_query(row, "ifeval.jsonl:1")
    assert query.messages == [{"role": "user", "content": "Write a haiku. Do not use commas."}]
    assert query.metadata == {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    with pytest.raises(ValueError, match="same length"):
        parse_query({**row, "kwargs": []}, "x")


def test_modes_mixed_and_auto():
    auto = Query(
        [
            {"role": "user", "content": "hi /no_think"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "again"},
        ],
        mode="auto",
    )
    assert auto.default_thinking() is False  # the last flag wins across turns
    assert auto.messages_for(True) == auto.messages  # auto never rewrites the text
    assert Query([{"role": "user", "content": "x"}], mode="mixed").default_thinking() is None


@pytest.mark.parametrize(
    "row, match",
    [
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "role 'bot'"),
        ({"messages": [{"role": "system", "content": "x"}]}, "no user turn"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "ends before the reply",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "mode": "fast"}, "'mode'"),
        (
            {"messages": [{"role": "user", "content": "x"}], "reward": {"names": "math"}},
            "reward.names",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "tools": "calculator"}, "'tools'"),
        ({"messages": [{"role": "user", "content": "x"}], "answer": [1]}, "'answer'"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_rows_name_the_place_and_the_field(row, match):
    with pytest.raises(ValueError, match=match) as error:
        parse_query(row, "data.jsonl:7")
    assert "data.jsonl:7" in str(error.value)


def test_files_errors_name_file_and_line(tmp_path):
    good = {"messages": [{"role": "user", "content": "1+1"}], "answer": "2"}
    path = _write(tmp_path / "q.jsonl", [good, "", "{not json"])
    with pytest.raises(ValueError, match=r"q.jsonl:3: invalid JSON"):
        read_queries(path)
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(json.dumps(good).encode() + b"\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"b.jsonl:2: not UTF-8"):
        read_queries(binary)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_queries(tmp_path / "missing.jsonl")
    assert len(read_queries(_write(tmp_path / "ok.jsonl", [good, good]))) == 2


def test_unknown_reward_names_say_which_exist(tmp_path):
    query = parse_query(
        {"messages": [{"role": "user", "content": "x"}], "reward": {"names": ["mathh"]}}, "q:3"
    )
    with pytest.raises(ValueError, match=r"q:3: reward.names \['mathh'\].*\['math'\].*arithmetic"):
        check_reward_names([query], ["math"])


def test_encode_query_prefills_the_empty_block_only_with_the_template_switch():
    tokenizer = build_toy_tokenizer()
    query = Query([{"role": "user", "content": "12+3"}], mode="no_think")
    _, ids, prefill = encode_query(tokenizer, query, False)
    assert prefill == "<think>\n\n</think>\n\n"
    assert tokenizer.decode(ids).endswith(
        "12+3 /no_think<|im_end|>\n<|im_start|>assistant\n" + prefill
    )
    _, ids, prefill = encode_query(tokenizer, query, False, template_switch=False)
    assert prefill == "" and tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_toy_queries_are_harder_and_never_the_cold_start_problems():
    from lit_qwen3.datamodules.arithmetic import ArithmeticTask

    data = QueryDataModule(
        toy_size=300,
        val_size=16,
        queries_per_step=4,
        toy_min_digits=2,
        toy_max_digits=2,
        toy_mul_fraction=0.0,
        toy_exclude_sft=3000,
    )
    data.setup("fit")
    sft = {p.question for p in ArithmeticTask(seed=0, mul_fraction=0.25).problems(3000, "train")}
    questions = {q.messages[0]["content"] for q in data.train_queries}
    assert len(questions) == 300 and not questions & sft
    assert data.verifier == "arithmetic" and len(data.val_queries) == 16
    batch = next(iter(data.train_dataloader()))
    assert len(batch) == 4 and all(isinstance(q, Query) for q in batch)
    first = data.refill_queries(3)
    state = data.state_dict()
    again = data.refill_queries(3)
    data.load_state_dict(state)
    assert data.refill_queries(3) == again and first != again


def test_toy_multi_turn_queries_put_a_flagged_exchange_before_the_question():
    """A share of toy training queries follow an earlier exchange with its own random flag;
    the mode writes only the last user turn's flag, so it alone decides (ThinkFollow)."""
    from lit_qwen3.chat import thinking_enabled
    from lit_qwen3.datamodules.arithmetic import extract_boxed

    data = QueryDataModule(
        toy_size=400, val_size=32, toy_mode="mixed", toy_multi_turn_fraction=0.5, toy_exclude_sft=0
    )
    data.setup("fit")
    multi = [q for q in data.train_queries if len(q.messages) == 3]
    assert 0.4 < len(multi) / 400 < 0.6
    assert all(len(q["messages"]) == 1 for q in data.val_queries)
    earlier_flags = {q.messages[0]["content"].rpartition(" ")[2] for q in multi}
    assert {"/think", "/no_think"} <= earlier_flags
    for query in multi:
        first, reply, last = query.messages
        a, b = (int(x) for x in first["content"].split()[0].split("+"))
        assert [first["role"], reply["role"], last["role"]] == ["user", "assistant", "user"]
        assert extract_boxed(reply["content"]) == str(a + b)
        for thinking in (True, False):
            messages = query.messages_for(thinking)
            assert messages[0] == first and thinking_enabled(messages) is thinking
    with pytest.raises(ValueError, match="toy_multi_turn_fraction"):
        QueryDataModule(toy_multi_turn_fraction=1.5)


def test_too_few_queries_is_a_clear_error(tmp_path):
    path = _write(tmp_path / "q.jsonl", [{"messages": [{"role": "user", "content": "1+1"}]}] * 3)
    data = QueryDataModule(data=str(path), queries_per_step=8, val_size=0)
    with pytest.raises(ValueError, match="fewer than queries_per_step=8"):
        data.setup("fit")


def test_a_toy_val_size_beyond_the_split_is_a_clear_error():
    """2-digit sums hold about 4,000 distinct problems, a fraction of them in the 'val' split:
    asking for more names the key and the number there is, and that number is then given."""
    import re

    settings = dict(toy_min_digits=2, toy_max_digits=2, toy_mul_fraction=0.0, toy_size=64)
    data = QueryDataModule("toy-teacher", queries_per_step=8, val_size=4000, **settings)
    with pytest.raises(ValueError, match=r"val_size=4000: .* holds only \d+ distinct") as err:
        data.setup("fit")
    available = int(re.search(r"only (\d+)", str(err.value)).group(1))
    assert 0 < available < 4000
    data = QueryDataModule("toy-teacher", queries_per_step=8, val_size=available, **settings)
    data.setup("fit")
    assert len({q["messages"][-1]["content"] for q in data.val_queries}) == available
