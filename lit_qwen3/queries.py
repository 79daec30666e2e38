"""RL queries: a prompt, the mode it asks for, and what its rewards need to score a reply.

Reasoning RL, general RL and on-policy distillation all start from queries rather than
conversations with answers. One row (JSONL or a ``datasets`` column set) is::

    {"messages": [{"role": "user", "content": "347+589"}],
     "reward": {"names": ["arithmetic"], "reference": "936"},
     "domain": "addition", "mode": "think"}

- ``messages``: the conversation before the reply (system, user, assistant and tool turns).
- ``mode``: ``think`` or ``no_think`` (the flag is written on the last user message),
  ``mixed`` (the stage picks a mode per rollout group), or ``auto`` (the flags already in the
  text decide: the last one wins, thinking when there is none). Default ``think``.
- ``reward``: ``names`` lists the reward labels of the stage's composite that score this query
  (default: all of them); every other key becomes reward metadata (``reference``, ``tests``,
  ``constraints``, ``instruction_id_list``, ``kwargs``...). A top-level ``answer`` is the
  ``reference`` when ``reward`` has none.
- ``tools``: names of agent tools the policy may call (see :mod:`lit_qwen3.tools`).
- ``domain``: for balancing and per-domain metrics. Other keys are kept in ``extra``.

IFEval rows (``prompt``, ``instruction_id_list``, ``kwargs``) are read as they are: the prompt
becomes one user message and the two lists reward metadata for the ``instructions`` reward,
which alone scores them (``reward.names``, unless the row names others).
Public math, code and RLVR rows are read as they are too (:mod:`lit_qwen3.formats`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_qwen3.chat import EMPTY_THINKING, thinking_enabled, with_thinking_flag
from lit_qwen3.formats import query_row

MODES = ("think", "no_think", "mixed", "auto")
ROLES = ("system", "user", "assistant", "tool")
_KNOWN_KEYS = {"messages", "reward", "answer", "mode", "domain", "tools", "metadata"}
_IFEVAL_KEYS = ("instruction_id_list", "kwargs")


@dataclass
class Query:
    """One RL prompt and what scoring its replies needs."""

    messages: list[dict[str, Any]]
    """The conversation before the reply."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Reward metadata (``reference``, ``tests``, ...), passed to every reward's ``Sample``."""
    rewards: list[str] | None = None
    """Labels of the stage's rewards that score this query; None: all of them."""
    mode: str = "think"
    """``think``, ``no_think``, ``mixed`` or ``auto`` (see the module docstring)."""
    domain: str = "default"
    tools: list[str] = field(default_factory=list)
    """Agent tools the policy may call while answering."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other keys of the row (``pass_rate``, ``difficulty``...), kept for logging."""
    source: str = ""
    """Where the row came from (``file:line``), for error messages."""

    def reward_metadata(self) -> dict[str, Any]:
        """``Sample.metadata`` of this query's replies, routing included."""
        metadata = dict(self.metadata)
        if self.rewards is not None:
            metadata["rewards"] = list(self.rewards)
        return metadata

    def messages_for(self, thinking: bool) -> list[dict[str, Any]]:
        """The prompt messages in the given mode: the flag written for ``think``/``no_think``
        and ``mixed``; the text untouched for ``auto``."""
        if self.mode == "auto":
            return [dict(m) for m in self.messages]
        return with_thinking_flag(self.messages, thinking)

    def default_thinking(self) -> bool | None:
        """The mode this query asks for; None for ``mixed`` (the caller picks)."""
        if self.mode == "mixed":
            return None
        if self.mode == "auto":
            return thinking_enabled(self.messages)
        return self.mode == "think"


def parse_query(row: Any, where: str) -> Query:
    """Validate one row and build its :class:`Query`; errors name ``where`` and the field."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    row = query_row(row, where)  # public layouts (math, code, RLVR) in the native format
    if "prompt" in row and "messages" not in row:  # IFEval / IFBench format
        row = _from_ifeval(row, where)
    messages = row.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ValueError(
            f"{where}: 'messages' must be a non-empty list of chat messages (or the row must be "
            "in a public layout: problem/question with answer, solution or tests; IFEval's "
            "prompt with instruction_id_list; see lit_qwen3/formats.py)"
        )
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise ValueError(f"{where}: messages[{i}] has role {role!r}, expected one of {ROLES}")
        if not isinstance(message.get("content", ""), str):
            raise ValueError(f"{where}: messages[{i}].content must be a string")
        clean.append({k: v for k, v in message.items() if v is not None})
    if not any(m["role"] == "user" for m in clean):
        raise ValueError(f"{where}: 'messages' has no user turn to answer")
    if clean[-1]["role"] == "assistant":
        raise ValueError(
            f"{where}: the last message is the assistant's; a query ends before the reply"
        )

    mode = row.get("mode", "think")
    if mode not in MODES:
        raise ValueError(f"{where}: 'mode' is {mode!r}, expected one of {MODES}")
    domain = row.get("domain", "default")
    if not isinstance(domain, str) or not domain:
        raise ValueError(f"{where}: 'domain' must be a non-empty string, got {domain!r}")
    tools = row.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise ValueError(f"{where}: 'tools' must be a list of tool names, got {tools!r}")

    reward = row.get("reward") or {}
    if not isinstance(reward, Mapping):
        raise ValueError(f"{where}: 'reward' must be an object, got {type(reward).__name__}")
    metadata = {k: v for k, v in reward.items() if k != "names"}
    extra_metadata = row.get("metadata") or {}
    if not isinstance(extra_metadata, Mapping):
        raise ValueError(f"{where}: 'metadata' must be an object")
    metadata = {**extra_metadata, **metadata}
    names = reward.get("names")
    if names is not None and (
        isinstance(names, str) or not isinstance(names, Sequence) or not names
    ):
        raise ValueError(f"{where}: 'reward.names' must be a non-empty list of reward labels")
    if "answer" in row and metadata.get("reference") is None:
        answer = row["answer"]
        if not isinstance(answer, (str, int, float)) or isinstance(answer, bool):
            raise ValueError(f"{where}: 'answer' must be a string or a number, got {answer!r}")
        metadata["reference"] = str(answer)
    extra = {k: v for k, v in row.items() if k not in _KNOWN_KEYS}
    return Query(
        messages=clean,
        metadata=metadata,
        rewards=list(names) if names is not None else None,
        mode=mode,
        domain=domain,
        tools=list(tools),
        extra=extra,
        source=where,
    )


def check_reward_names(queries: Sequence[Query], labels: Sequence[str]) -> None:
    """Every query's ``reward.names`` must be labels of the stage's reward composite."""
    for query in queries:
        unknown = [name for name in query.rewards or () if name not in labels]
        if unknown:
            from lit_qwen3.rewards import available_rewards

            raise ValueError(
                f"{query.source}: reward.names {unknown} are not rewards of this stage; its "
                f"rewards are {list(labels)} (add them under `model.init_args.rewards`; "
                f"registered reward names: {', '.join(available_rewards())})"
            )


def check_reward_metadata(queries: Sequence[Query], rewards: Any) -> None:
    """Every query's metadata must be usable by the rewards that score it (``rewards``: a
    :class:`~lit_qwen3.rewards.composite.CompositeReward`); a code test that cannot be checked
    safely, say, is refused here, the error naming the row's file and line."""
    from lit_qwen3.rewards import Sample

    for query in queries:
        sample = Sample.from_completion(query.messages, "", metadata=query.reward_metadata())
        try:
            rewards.check([sample])
        except (TypeError, ValueError) as err:
            message = str(err).removeprefix("samples[0]: ")
            raise type(err)(f"{query.source or 'a query'}: {message}") from None


def _from_ifeval(row: dict[str, Any], where: str) -> dict[str, Any]:
    prompt = row.pop("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: 'prompt' must be a non-empty string")
    missing = [key for key in _IFEVAL_KEYS if key not in row]
    if missing:
        raise ValueError(f"{where}: an IFEval row needs {missing} next to 'prompt'")
    ids, kwargs = row.pop("instruction_id_list"), row.pop("kwargs")
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
        raise ValueError(
            f"{where}: 'instruction_id_list' and 'kwargs' must be lists of the same length"
        )
    reward = dict(row.pop("reward", None) or {})
    reward.setdefault("names", ["instructions"])  # the lists are that reward's, not math's
    reward.update({"instruction_id_list": ids, "kwargs": kwargs})
    row.pop("key", None)
    return {**row, "messages": [{"role": "user", "content": prompt}], "reward": reward}


def read_queries(data: str | Path) -> list[Query]:
    """Queries of a ``.jsonl`` file or a ``datasets`` directory; errors name file and line."""
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"query data {str(path)!r} does not exist")
    if path.is_dir():
        import datasets  # lazy: only this source needs it

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise ValueError(f"{path}: dataset has splits {list(loaded)}, expected 'train'")
            loaded = loaded["train"]
        queries = [parse_query(row, f"{path}[row {i}]") for i, row in enumerate(loaded)]
    elif path.suffix == ".jsonl":
        queries = []
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                where = f"{path}:{number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ValueError(f"{where}: not UTF-8 ({error.reason})") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError, ValueError) as error:
                    raise ValueError(f"{where}: invalid JSON: {error}") from None
                queries.append(parse_query(row, where))
    else:
        raise ValueError(f"{path}: expected a .jsonl file or a datasets directory")
    if not queries:
        raise ValueError(f"no queries in {path}")
    return queries


def evaluation_rows(data: str | Path) -> list[dict[str, Any]]:
    """An evaluation file's queries as evaluation rows (``messages``, ``answer``, ``metadata``),
    as ``PassAtK``, ``ThinkingBudget`` and the pipeline's report take them."""
    return [
        {
            "messages": q.messages,
            "answer": q.metadata.get("reference"),
            "metadata": q.reward_metadata(),
        }
        for q in read_queries(data)
    ]


def encode_query(
    tokenizer: Any,
    query: Query,
    thinking: bool,
    *,
    template_switch: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[int], str]:
    """(prompt messages, prompt token ids, prefill) of ``query`` in the given mode.

    ``template_switch`` also sets the template's ``enable_thinking``: Qwen3's template then
    writes the empty thinking block itself for non-thinking prompts. Without it only the flag
    in the text asks for the mode, and the policy must write the block (flag-following
    training). ``prefill`` is what the template put after the generation prompt (the empty
    block, or ""): a reply's text for rewards is ``prefill + completion``.
    """
    messages = query.messages_for(thinking)
    kwargs: dict[str, Any] = {"enable_thinking": thinking if template_switch else True}
    if tools:
        kwargs["tools"] = list(tools)
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **kwargs
    )
    prefill = EMPTY_THINKING if text.endswith(EMPTY_THINKING) else ""
    return messages, tokenizer(text, add_special_tokens=False)["input_ids"], prefill
