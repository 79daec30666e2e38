"""Public datasets' rows read as they are: their fields mapped onto this package's row formats.

Users bring data from the Hub rather than writing it in our format, so the readers accept the
common public layouts and rewrite each row into the native one (chat rows: ``messages`` with
``reasoning_content``; query rows: ``messages`` + ``answer`` / ``reward``). A row that fits no
layout, or a field that does not hold what its layout says, is a ``ValueError`` naming the row
(``file:line``) and the field. The README's "From the toy to a real run" has the mapping table.

Chat SFT (:func:`chat_row`; ``ConversationDataModule``, fusion and distillation data):

- ``messages`` (OpenR1 style): an assistant ``content`` of ``<think>X</think>Y`` becomes
  ``reasoning_content: X``, ``content: Y``; so does OpenThoughts' ``<|begin_of_thought|>X
  <|end_of_thought|>`` ``<|begin_of_solution|>Y<|end_of_solution|>``;
- ``conversations`` of ``{"from", "value"}`` (ShareGPT: OpenThoughts, Bespoke-Stratos), with an
  optional top-level ``system`` string;
- tool dialogues in the Hugging Face format: ``tools`` (JSON schemas; a JSON string too) and
  assistant ``tool_calls`` whose ``arguments`` may be a JSON string; ``content`` as a list of
  ``{"type": "text", "text"}`` parts is joined.

RL and evaluation queries (:func:`query_row`; ``QueryDataModule``, curation, ``PassAtK``, the
report):

- math (DeepScaleR, NuminaMath, OpenR1-Math, AIME, MATH-500, GSM8K): ``problem`` / ``question``
  and ``answer``, else ``solution`` whose last ``\\boxed{}`` is the answer (GSM8K's ``#### 72``
  too); capitalised keys (``Problem``, ``Answer``) as AIME 2024 has them; scored by ``math``;
- code (APPS, TACO, LiveCodeBench, MBPP, AceCode): ``question`` / ``question_content`` /
  ``problem`` / ``prompt`` / ``text`` with ``input_output`` (``inputs``/``outputs``, and
  ``fn_name`` for call-based problems), ``public_test_cases`` / ``private_test_cases`` (LCB's
  JSON lists; ``functional`` cases with ``metadata.func_name``), ``test_list`` (+
  ``test_imports``), ``test_cases`` or ``tests``: mapped onto the ``code`` reward's
  ``metadata["tests"]`` (stdin/stdout pairs or assert strings);
- instructions: IFEval rows (``prompt``, ``instruction_id_list``, ``kwargs``) are read by
  :mod:`lit_qwen3.queries`; RLVR rows (``messages`` + ``ground_truth`` holding
  ``instruction_id`` and ``kwargs``, as in allenai's IF-RLVR sets) become the same metadata; a
  plain ``ground_truth`` string (RLVR-GSM/MATH) is the answer.

Preference pairs (:func:`preference_row`): ``chosen`` / ``rejected`` as strings, as message
lists ending with the reply (UltraFeedback-binarized; the prompt is ``prompt`` or their shared
opening), or as HH-RLHF transcripts (``\\n\\nHuman: ...\\n\\nAssistant: ...``).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["chat_row", "preference_row", "query_row"]

_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}
_THINK = re.compile(r"^\s*<think>(.*?)</think>(.*)$", re.DOTALL)
_THOUGHT = re.compile(
    r"^\s*<\|begin_of_thought\|>(.*?)<\|end_of_thought\|>\s*"
    r"(?:<\|begin_of_solution\|>(.*?)(?:<\|end_of_solution\|>)?\s*)?$",
    re.DOTALL,
)
_QUESTION_KEYS = ("problem", "question", "question_content", "prompt", "text")
_ANSWER_KEYS = ("answer", "final_answer", "expected_answer")
_TEST_KEYS = (
    "input_output",
    "public_test_cases",
    "private_test_cases",
    "test_list",
    "test_cases",
    "tests",
)


# ----------------------------------------------------------------------------- chat rows
def chat_row(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A chat SFT row in the native format (``messages`` with ``reasoning_content``)."""
    out = dict(row)
    if "messages" not in out and "conversations" in out:
        out["messages"] = _sharegpt(out.pop("conversations"), out.pop("system", None), where)
    messages = out.get("messages")
    if isinstance(messages, Sequence) and not isinstance(messages, str):
        out["messages"] = [
            _chat_message(m, f"{where}: messages[{i}]") for i, m in enumerate(messages)
        ]
    if out.get("tools") is not None:
        out["tools"] = _tool_schemas(out["tools"], where)
    return out


def _sharegpt(turns: Any, system: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"{where}: 'conversations' must be a non-empty list of turns")
    messages = []
    if system is not None:
        if not isinstance(system, str):
            raise ValueError(f"{where}: 'system' must be a string, got {type(system).__name__}")
        if system.strip():
            messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        field = f"{where}: conversations[{i}]"
        if not isinstance(turn, Mapping):
            raise ValueError(f"{field} must be an object with 'from' and 'value'")
        if "role" in turn:  # some sets use the messages layout under this name
            messages.append(dict(turn))
            continue
        speaker = turn.get("from")
        if not isinstance(speaker, str) or speaker not in _SHAREGPT_ROLES:
            raise ValueError(
                f"{field}.from is {speaker!r:.40}, expected one of {sorted(_SHAREGPT_ROLES)}"
            )
        if not isinstance(turn.get("value"), str):
            raise ValueError(f"{field}.value must be a string")
        messages.append({"role": _SHAREGPT_ROLES[speaker], "content": turn["value"]})
    return messages


def _chat_message(message: Any, field: str) -> Any:
    if not isinstance(message, Mapping):
        return message  # the native reader names the problem
    message = dict(message)
    content = message.get("content")
    if isinstance(content, list):
        message["content"] = _text_parts(content, f"{field}.content")
    if message.get("role") == "assistant":
        if message.get("reasoning_content") is None and isinstance(message.get("content"), str):
            message.update(_split_reasoning(message["content"], f"{field}.content"))
        if message.get("tool_calls") is not None:
            message["tool_calls"] = _tool_calls(message["tool_calls"], field)
    return message


def _text_parts(parts: list, field: str) -> str:
    texts = []
    for j, part in enumerate(parts):
        if not (isinstance(part, Mapping) and isinstance(part.get("text"), str)):
            raise ValueError(f"{field}[{j}] must be a {{'type': 'text', 'text': str}} part")
        texts.append(part["text"])
    return "".join(texts)


def _split_reasoning(content: str, field: str) -> dict[str, str]:
    """``reasoning_content`` and ``content`` of a reply that writes its thinking inline."""
    if (found := _THINK.match(content)) is not None:
        return {"reasoning_content": found[1].strip("\n"), "content": found[2].lstrip("\n")}
    if (found := _THOUGHT.match(content)) is not None:
        answer = found[2] if found[2] is not None else ""
        return {"reasoning_content": found[1].strip(), "content": answer.strip()}
    for marker in ("<think>", "</think>", "<|begin_of_thought|>", "<|end_of_thought|>"):
        if marker in content:
            raise ValueError(
                f"{field}: {marker!r} without its pair, or after the reply's start: the thinking "
                "block must open the reply and be closed once"
            )
    return {"content": content}


def _tool_calls(calls: Any, field: str) -> Any:
    if not isinstance(calls, list):
        return calls  # the native reader names the problem
    out = []
    for j, call in enumerate(calls):
        if isinstance(call, Mapping):
            call = dict(call)
            function = call.get("function")
            if isinstance(function, Mapping):
                function = dict(function)
                function["arguments"] = _arguments(
                    function.get("arguments"), f"{field}.tool_calls[{j}].function.arguments"
                )
                call["function"] = function
            elif "arguments" in call:
                call["arguments"] = _arguments(
                    call["arguments"], f"{field}.tool_calls[{j}].arguments"
                )
        out.append(call)
    return out


def _arguments(value: Any, field: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value) if value.strip() else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{field}: not a JSON object ({error.msg})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{field}: must be a JSON object, got {type(parsed).__name__}")
    return parsed


def _tool_schemas(tools: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(tools, str):
        tools = _loads(tools, f"{where}: tools")
    if not isinstance(tools, list):
        raise ValueError(f"{where}: 'tools' must be a list of tool schemas")
    out = []
    for j, tool in enumerate(tools):
        if isinstance(tool, str):
            tool = _loads(tool, f"{where}: tools[{j}]")
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not (isinstance(function, Mapping) and isinstance(function.get("name"), str)):
            raise ValueError(
                f"{where}: tools[{j}] must be {{'type': 'function', 'function': {{'name': str, "
                f"'parameters': ...}}}} or {{'name': str, ...}}, got {tool!r:.100}"
            )
        out.append({"type": "function", "function": dict(function)})
    return out


def _loads(text: str, field: str) -> Any:
    """JSON, else a Python literal (some sets store ``str(dict)``); errors name ``field``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"{field}: neither JSON nor a Python literal: {text[:80]!r}") from None


# ----------------------------------------------------------------------------- query rows
def _get(row: Mapping[str, Any], keys: Sequence[str]) -> tuple[str, Any] | None:
    """The first of ``keys`` present (not None) in ``row``, in lower or capitalised form."""
    for key in keys:
        for name in (key, key.capitalize()):
            if row.get(name) is not None:
                return name, row[name]
    return None


def query_row(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A query row in the native format; native and IFEval rows come back unchanged."""
    out = dict(row)
    if "ground_truth" in out and isinstance(out.get("messages"), list):
        return _rlvr(out, where)
    messages = out.get("messages")
    asks_reply = isinstance(messages, list) and messages and _last_role(messages) != "assistant"
    if asks_reply or "instruction_id_list" in out:
        return out
    question = _get(out, _QUESTION_KEYS)
    if question is None:
        return out  # the native reader says what is missing
    tests = _get(out, _TEST_KEYS)
    if tests is not None:
        return _code(out, question, where)
    if _get(out, (*_ANSWER_KEYS, "solution")) is not None:
        return _math(out, question, where)
    return out


def _last_role(messages: list) -> Any:
    last = messages[-1]
    return last.get("role") if isinstance(last, Mapping) else None


def _prompt(question: tuple[str, Any], where: str) -> list[dict[str, str]]:
    key, text = question
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: '{key}' must be a non-empty string (the question)")
    return [{"role": "user", "content": text}]


def _native(row: dict[str, Any], used: Sequence[str], **fields: Any) -> dict[str, Any]:
    rest = {k: v for k, v in row.items() if k not in used and k != "messages"}
    return {**rest, **fields}


def _math(row: dict[str, Any], question: tuple[str, Any], where: str) -> dict[str, Any]:
    found = _get(row, _ANSWER_KEYS)
    if found is not None:
        key, answer = found
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise ValueError(f"{where}: '{key}' must be a string or a number, got {answer!r:.60}")
        answer = _gsm8k(str(answer)) if isinstance(answer, str) else str(answer)
        if not answer.strip():
            raise ValueError(f"{where}: '{key}' is empty")
    else:
        key, solution = _get(row, ("solution",))
        if not isinstance(solution, str):
            raise ValueError(f"{where}: '{key}' must be a string, got {type(solution).__name__}")
        from lit_qwen3.rewards.math_answer import last_boxed

        answer = last_boxed(solution)
        if not answer:
            raise ValueError(
                f"{where}: '{key}' has no \\boxed{{...}} answer to check against (and the row "
                "has no 'answer' field)"
            )
    used = [question[0], key]
    reward = dict(row.get("reward") or {})
    reward.setdefault("names", ["math"])
    fields = {"answer": answer, "reward": reward, "domain": row.get("domain", "math")}
    return _native(row, used, messages=_prompt(question, where), **fields)


def _gsm8k(answer: str) -> str:
    """GSM8K's ``reasoning #### 72`` answers: the number after ``####``."""
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip().replace(",", "")
    return answer


def _code(row: dict[str, Any], question: tuple[str, Any], where: str) -> dict[str, Any]:
    tests: list[Any] = []
    used = [question[0]]
    for key in _TEST_KEYS:
        if row.get(key) is None:
            continue
        used.append(key)
        field = f"{where}: '{key}'"
        value = row[key]
        if key == "input_output":
            tests += _apps_tests(_decoded(value, field), field)
        elif key in ("public_test_cases", "private_test_cases"):
            if isinstance(value, str) and not value.lstrip().startswith("["):
                # LiveCodeBench ships private tests zlib-compressed and pickled: unpickling
                # runs code, so they are not read (decode them yourself into a JSON list)
                row = {**row, "skipped_tests": key}
                continue
            tests += _lcb_tests(_decoded(value, field), row.get("metadata"), field)
        else:
            tests += _listed_tests(value, row, field)
    used += ["test_imports", "test_setup_code", "metadata"]
    if not tests:
        raise ValueError(f"{where}: the test fields {used[1:-3]} hold no test case")
    reward = dict(row.get("reward") or {})
    reward.setdefault("names", ["code"])
    reward["tests"] = tests
    domain = row.get("domain", "code")
    return _native(row, used, messages=_prompt(question, where), reward=reward, domain=domain)


def _decoded(value: Any, field: str) -> Any:
    return _loads(value, field) if isinstance(value, str) else value


def _as_text(value: Any, field: str) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)  # APPS writes some inputs/outputs as lists of lines
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string (or a list of lines), got {value!r:.60}")
    return value


def _apps_tests(spec: Any, field: str) -> list[Any]:
    """APPS / TACO ``input_output``: stdin/stdout pairs, or calls of ``fn_name``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"{field} must be an object with 'inputs' and 'outputs'")
    inputs, outputs = spec.get("inputs"), spec.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise ValueError(f"{field}: 'inputs' and 'outputs' must be lists of the same length")
    name = spec.get("fn_name")
    if name is not None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{field}.fn_name must be a function name, got {name!r:.40}")
        return [
            _call_assert(name, args, expected, f"{field}.inputs[{i}]")
            for i, (args, expected) in enumerate(zip(inputs, outputs, strict=True))
        ]
    return [
        {
            "input": _as_text(given, f"{field}.inputs[{i}]"),
            "output": _as_text(expected, f"{field}.outputs[{i}]"),
        }
        for i, (given, expected) in enumerate(zip(inputs, outputs, strict=True))
    ]


def _call_assert(name: str, args: Any, expected: Any, field: str) -> str:
    """``assert name(*args) == expected``; APPS wraps each expected value in a list."""
    if not isinstance(args, list):
        raise ValueError(f"{field} must be the list of the call's arguments, got {args!r:.60}")
    if isinstance(expected, list) and len(expected) == 1:
        expected = expected[0]
    return f"assert {name}({', '.join(repr(a) for a in args)}) == {expected!r}"


def _lcb_tests(cases: Any, metadata: Any, field: str) -> list[Any]:
    """LiveCodeBench test cases: ``stdin`` pairs, or ``functional`` calls of a method."""
    if not isinstance(cases, list):
        raise ValueError(f"{field} must be a list of {{'input', 'output', 'testtype'}} cases")
    out: list[Any] = []
    for i, case in enumerate(cases):
        where = f"{field}[{i}]"
        if not isinstance(case, Mapping):
            raise ValueError(f"{where} must be an object with 'input', 'output', 'testtype'")
        given = _as_text(case.get("input"), f"{where}.input")
        expected = _as_text(case.get("output"), f"{where}.output")
        if case.get("testtype", "stdin") == "stdin":
            out.append({"input": given, "output": expected})
            continue
        if case.get("testtype") != "functional":
            raise ValueError(f"{where}.testtype is {case.get('testtype')!r:.30}")
        meta = _decoded(metadata, f"{field} (the row's 'metadata')") if metadata else {}
        name = meta.get("func_name") if isinstance(meta, Mapping) else None
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{where}: a functional case needs metadata.func_name")
        args = [_loads(line, f"{where}.input") for line in given.splitlines() if line.strip()]
        value = _loads(expected, f"{where}.output")
        out.append(f"assert Solution().{name}({', '.join(map(repr, args))}) == {value!r}")
    return out


def _listed_tests(value: Any, row: Mapping[str, Any], field: str) -> list[Any]:
    """``test_list`` / ``test_cases`` / ``tests``: assert strings or stdin/stdout pairs."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{field} must be a list of assert strings or {{'input', 'output'}}")
    if row.get("test_setup_code"):
        raise ValueError(
            f"{field}: 'test_setup_code' is not supported (the code reward runs assert tests "
            "only; fold the setup into the prompt)"
        )
    imports = row.get("test_imports") or []
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ValueError(f"{field}: 'test_imports' must be a list of import lines")
    out: list[Any] = []
    for i, test in enumerate(value):
        if isinstance(test, str):
            out.append("\n".join([*imports, test]))
        elif isinstance(test, Mapping) and {"input", "output"} <= set(test):
            out.append(
                {
                    "input": _as_text(test["input"], f"{field}[{i}].input"),
                    "output": _as_text(test["output"], f"{field}[{i}].output"),
                }
            )
        else:
            raise ValueError(f"{field}[{i}] must be an assert string or {{'input', 'output'}}")
    return out


def _rlvr(row: dict[str, Any], where: str) -> dict[str, Any]:
    """RLVR rows: ``ground_truth`` is instruction constraints (IF sets) or the answer."""
    truth = row.pop("ground_truth")
    field = f"{where}: 'ground_truth'"
    spec = truth
    if isinstance(truth, str):
        stripped = truth.strip()
        spec = _loads(stripped, field) if stripped[:1] in "[{" else truth
    if isinstance(spec, list) and len(spec) == 1:
        spec = spec[0]
    if isinstance(spec, Mapping):
        if "func_name" in spec:
            raise ValueError(
                f"{field} names open-instruct's IFEvalG function {spec['func_name']!r:.40}: only "
                "the instruction_id / kwargs form (allenai's IF-RLVR sets) maps onto IFEval "
                "checkers; rewrite it as IFEval's instruction_id_list and kwargs"
            )
        ids = spec.get("instruction_id", spec.get("instruction_id_list"))
        kwargs = spec.get("kwargs")
        if isinstance(ids, str):
            ids, kwargs = [ids], [kwargs or {}]
        if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
            raise ValueError(
                f"{field} must hold 'instruction_id' and 'kwargs' lists of the same length"
            )
        kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs]
        reward = dict(row.get("reward") or {})
        reward.setdefault("names", ["instructions"])
        reward.update({"instruction_id_list": ids, "kwargs": kwargs})
        row.setdefault("domain", "instructions")
        return {**row, "reward": reward}
    if isinstance(spec, bool) or not isinstance(spec, (str, int, float)):
        raise ValueError(f"{field} must be an answer or instruction constraints, got {spec!r:.60}")
    row.setdefault("domain", str(row.get("dataset") or "math"))
    reward = dict(row.get("reward") or {})
    reward.setdefault("names", ["math"])
    return {**row, "answer": _gsm8k(str(spec)), "reward": reward}


# ----------------------------------------------------------------------------- preference rows
def preference_row(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``prompt`` / ``chosen`` / ``rejected`` with string replies; see the module docstring."""
    out = dict(row)
    chosen, rejected = out.get("chosen"), out.get("rejected")
    if isinstance(chosen, list) and isinstance(rejected, list):
        for key, value in (("chosen", chosen), ("rejected", rejected)):
            if (
                not value
                or not isinstance(value[-1], Mapping)
                or value[-1].get("role") != "assistant"
            ):
                raise ValueError(f"{where}: '{key}' must end with the assistant's reply")
            if not isinstance(value[-1].get("content"), str):
                raise ValueError(f"{where}: '{key}'[-1].content must be a string")
        if out.get("prompt") is None or isinstance(out.get("prompt"), str):
            if chosen[:-1] != rejected[:-1]:
                raise ValueError(
                    f"{where}: 'chosen' and 'rejected' differ before their last reply, so the "
                    "pair has no common prompt"
                )
            if chosen[:-1]:
                out["prompt"] = [dict(m) for m in chosen[:-1]]
        out["chosen"], out["rejected"] = chosen[-1]["content"], rejected[-1]["content"]
    elif out.get("prompt") is None and isinstance(chosen, str) and isinstance(rejected, str):
        if chosen.lstrip().startswith("Human:") or "\n\nHuman:" in chosen:
            prompt_c, out["chosen"] = _hh_split(chosen, f"{where}: 'chosen'")
            prompt_r, out["rejected"] = _hh_split(rejected, f"{where}: 'rejected'")
            if prompt_c != prompt_r:
                raise ValueError(f"{where}: 'chosen' and 'rejected' differ before the last reply")
            out["prompt"] = prompt_c
    return out


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


def _hh_split(text: str, field: str) -> tuple[list[dict[str, str]], str]:
    """An HH-RLHF transcript as (prompt messages, last assistant reply)."""
    parts = _HH_TURN.split(text)
    turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    if not turns or turns[-1][0] != "Assistant" or turns[0][0] != "Human":
        raise ValueError(f"{field}: expected 'Human: ...' turns ending with 'Assistant: ...'")
    roles = {"Human": "user", "Assistant": "assistant"}
    prompt = [{"role": roles[who], "content": said} for who, said in turns[:-1]]
    return prompt, turns[-1][1]
