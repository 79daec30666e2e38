"""Data loaders on bad input: every failure is a ValueError naming the file and the line.

Files are made of generated lines: valid rows, rows with one field replaced by any JSON value,
any JSON value, raw bytes, deep nesting, over-long integers, lone surrogate escapes. Reading a
file either succeeds or fails at a line that fails alone too, after lines that pass alone; rows
that read cleanly then tokenize (toy tokenizer), or fail naming their line. Never a bare
exception from inside ``json``, the chat template or the tokenizer.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from fuzzing import any_text, chat_text, fuzz, json_values
from hypothesis import event, given
from hypothesis import strategies as st

from lit_qwen3.datamodules.conversations import ConversationDataModule, read_conversations
from lit_qwen3.datamodules.preference_pairs import (
    MAX_MARGIN,
    PreferencePairsDataModule,
    read_preference_pairs,
)
from lit_qwen3.ops.losses import bradley_terry_loss
from lit_qwen3.queries import read_queries

ROLES = ["system", "user", "assistant", "tool"]


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` three times in four, else ``bad``."""
    return st.one_of(good, good, good, bad)


texts = mostly(any_text, chat_text | st.just("\\ud800"))
tool_call = st.fixed_dictionaries(
    {"name": any_text, "arguments": st.dictionaries(any_text, json_values, max_size=2) | any_text}
)
tool_calls = mostly(
    st.lists(tool_call.map(lambda c: {"function": c}) | tool_call, min_size=1, max_size=2),
    json_values,
)


@st.composite
def messages(draw) -> dict:
    message = {"role": draw(mostly(st.sampled_from(ROLES), json_values))}
    message["content"] = draw(mostly(texts, json_values))
    if draw(st.booleans()):
        message["reasoning_content"] = draw(mostly(texts, json_values))
    if draw(st.integers(0, 3)) == 0:
        message["tool_calls"] = draw(tool_calls)
    return message


@st.composite
def conversation_rows(draw) -> dict:
    row = {"messages": draw(mostly(st.lists(messages(), min_size=1, max_size=4), json_values))}
    if draw(st.booleans()):
        row["enable_thinking"] = draw(mostly(st.booleans(), json_values))
    return row


@st.composite
def schema_rows(draw) -> dict:
    """Rows of the right shape whose text is adversarial: markers, long runs, tool calls."""
    text = st.one_of(any_text, chat_text, st.integers(0, 3000).map(lambda n: "ab " * n))
    turns = []
    for _ in range(draw(st.integers(1, 2))):
        turns.append({"role": draw(st.sampled_from(["system", "user", "tool"])), "content": ""})
        turns[-1]["content"] = draw(text)
        reply = {"role": "assistant", "content": draw(text)}
        if draw(st.booleans()):
            reply["reasoning_content"] = draw(text)
        if draw(st.booleans()):
            reply["tool_calls"] = draw(tool_calls)
        turns.append(reply)
    return {"messages": turns, "enable_thinking": draw(st.booleans())}


def raw_lines(rows: st.SearchStrategy) -> st.SearchStrategy:
    """One line of a JSONL file, as bytes (no newline inside)."""
    as_json = rows.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return st.one_of(
        as_json,
        as_json,
        as_json,
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
        st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
        st.integers(4200, 5000).map(lambda n: b'{"n": ' + b"7" * n + b"}"),  # over-long int
        st.sampled_from([b"", b"   ", b"\xef\xbb\xbf{}", b"NaN", b'{"messages": "\\ud83d"}']),
    )


def blank(line: bytes) -> bool:
    return not line.strip(b" \t\r\n")


def write(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def located(error: Exception, path) -> int:
    """The line number an error names; fails the test if it names none."""
    match = re.match(rf"{re.escape(str(path))}:(\d+): ", str(error))
    assert match, f"error names no file:line: {type(error).__name__}: {error}"
    return int(match.group(1))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_data")


def check_reader(reader, scratch, lines: list[bytes]) -> object | None:
    """Read ``lines``; on failure, the named line fails alone and the lines before it pass."""
    path = write(scratch / "data.jsonl", lines)
    try:
        return reader(path)
    except ValueError as error:
        message = str(error)
    if all(blank(line) for line in lines):  # nothing to read: the error names the file
        assert str(path) in message
        return None
    bad = located(ValueError(message), path)
    assert not blank(lines[bad - 1])
    for number, line in enumerate(lines[:bad], start=1):
        if blank(line):
            continue
        alone = write(scratch / "one.jsonl", [line] if number == 1 else [b"", line])
        if number < bad:
            reader(alone)
        else:
            with pytest.raises(ValueError) as again:
                reader(alone)
            assert located(again.value, alone) == min(number, 2)
    return None


@fuzz(250)
@given(st.lists(raw_lines(conversation_rows()), min_size=1, max_size=5))
def test_conversation_reader_fails_only_with_file_and_line(scratch, lines):
    rows = check_reader(read_conversations, scratch, lines)
    if rows is not None:
        assert len(rows) == sum(1 for line in lines if not blank(line))


@fuzz(150)
@given(
    st.lists(schema_rows().map(lambda r: json.dumps(r).encode()), min_size=1, max_size=3),
    st.sampled_from(["drop", "truncate", "error"]),
    st.sampled_from([16, 128, 1024]),
)
def test_rows_that_read_cleanly_tokenize_or_fail_naming_their_line(
    scratch, toy_tokenizer, lines, overflow, max_length
):
    path = write(scratch / "rows.jsonl", lines)
    try:
        read_conversations(path)
    except ValueError:
        event("rows did not read")
        return  # the reader's errors are the property above
    dm = ConversationDataModule(
        toy_tokenizer, data=str(path), max_length=max_length, val_size=0, overflow=overflow
    )
    try:
        dm.setup()
    except ValueError as error:
        event(f"setup failed: {str(error).split(': ')[-1][:30]}")
        if not str(error).startswith("all "):  # every row dropped: names the source instead
            located(error, path)
        else:
            assert str(path) in str(error)
        return
    event("tokenized")
    assert dm.stats["train_conversations"] >= 1
    for batch in dm.train_dataloader():  # packed rows: every document within max_length
        assert int(batch["position_ids"].max()) < max_length


# -- RL queries -----------------------------------------------------------------------------------
@st.composite
def query_rows(draw) -> dict:
    if draw(st.integers(0, 4)) == 0:  # the IFEval form
        ids = draw(mostly(st.lists(st.sampled_from(["punctuation:no_comma", "x"])), json_values))
        row = {"prompt": draw(texts), "instruction_id_list": ids}
        size = len(ids) if isinstance(ids, list) else 1
        row["kwargs"] = draw(mostly(st.just([{}] * size), json_values))
        return row
    row = {"messages": draw(mostly(st.lists(messages(), min_size=1, max_size=3), json_values))}
    optional = {
        "mode": st.sampled_from(["think", "no_think", "mixed", "auto", "bad"]),
        "reward": st.fixed_dictionaries({"names": st.lists(st.sampled_from(["math", "x"]))}),
        "domain": any_text,
        "tools": st.lists(any_text, max_size=2),
        "answer": any_text,
    }
    for key, good in optional.items():
        if draw(st.booleans()):
            row[key] = draw(mostly(good, json_values))
    return row


@fuzz(150)
@given(st.lists(raw_lines(query_rows()), min_size=1, max_size=4))
def test_query_reader_fails_only_with_file_and_line(scratch, lines):
    queries = check_reader(read_queries, scratch, lines)
    if queries is not None:
        assert [q.source for q in queries] == [
            f"{scratch / 'data.jsonl'}:{n}" for n, line in enumerate(lines, 1) if not blank(line)
        ]


# -- preference pairs ----------------------------------------------------------------------------
prompts = mostly(
    texts | st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": texts})),
    json_values | st.just([{"role": "wizard", "content": "hi"}]),
)
replies = mostly(st.sampled_from(["yes", "no", "<think>hmm</think> yes", "maybe"]), texts)
margins = st.one_of(
    st.none(),
    st.floats(-2 * MAX_MARGIN, 2 * MAX_MARGIN),
    st.sampled_from([1e300, -1e300, 10**400]),
    json_values,
)


@st.composite
def pair_rows(draw) -> dict:
    row = {"prompt": draw(prompts), "chosen": draw(replies), "rejected": draw(replies)}
    if draw(st.booleans()):
        row["margin"] = draw(margins)
    if draw(st.integers(0, 5)) == 0:
        del row[draw(st.sampled_from(sorted(row)))]
    return row


@fuzz(250)
@given(st.lists(raw_lines(pair_rows()), min_size=1, max_size=5))
def test_preference_reader_fails_only_with_file_and_line(scratch, lines):
    pairs = check_reader(read_preference_pairs, scratch, lines)
    for pair in pairs or []:
        assert pair.chosen != pair.rejected
        assert all(m["role"] in ROLES for m in pair.prompt)
        assert pair.margin is None or (
            math.isfinite(pair.margin) and abs(pair.margin) <= MAX_MARGIN
        )


@fuzz(60)
@given(st.lists(pair_rows(), min_size=1, max_size=3))
def test_pairs_that_read_cleanly_encode_and_give_a_finite_loss(scratch, toy_tokenizer, rows):
    path = write(scratch / "pairs.jsonl", [json.dumps(r).encode() for r in rows])
    try:
        pairs = read_preference_pairs(path)
    except ValueError as error:
        located(error, path)
        return
    dm = PreferencePairsDataModule(str(path), toy_tokenizer, max_length=32, val_fraction=0.0)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    scores = torch.randn(2, len(pairs), generator=torch.Generator().manual_seed(0)) * 1e4
    loss = bradley_terry_loss(scores[0], scores[1], margin=batch.get("margin"))
    assert torch.isfinite(loss)
