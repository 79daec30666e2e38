"""vLLM rollouts without vLLM: the clear error when it is missing, and the thinking-budget
bookkeeping of generation in rounds (``lit_qwen3.rollout.budget_rounds``), exactly against the built-in
sampler's ``BudgetState`` on hand-made token streams and against ``RolloutSampler`` itself on a
tiny model.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)

from lit_qwen3.chat import ThinkTokens
from lit_qwen3.rollout.budget_rounds import BudgetRules, generate_in_rounds
from lit_qwen3.rollout.generation import RolloutSampler, SamplingConfig, left_pad
from lit_qwen3.rollout.sampling import (
    BudgetState,
    forced_table,
    resolve_thinking_budget,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None
INSTALL_HINT = "pip install 'lit-qwen3[vllm]'"

# A hand-made vocabulary: the streams below never contain the forced texts' first tokens (7, 9),
# so a scripted model can tell its own tokens from forced ones by looking at the context.
PAD, THINK, END_THINK, EOS, TOOL_END = 0, 1, 2, 3, 4
STOP = (7, 8, END_THINK, 9)  # "Considering the limited time ... </think>\n\n"
EMPTY = (9, END_THINK, 9)  # "\n\n</think>\n\n"
TOKENS = ThinkTokens(THINK, END_THINK, (EOS,), PAD)


def rules(max_new_tokens: int, eos: tuple[int, ...] = (EOS,)) -> BudgetRules:
    return BudgetRules(max_new_tokens, eos, THINK, END_THINK, STOP, EMPTY)


def own_tokens(generated: list[int]) -> int:
    """How many tokens of ``generated`` the model wrote itself (forced texts skipped)."""
    n, i = 0, 0
    while i < len(generated):
        if generated[i] == STOP[0]:
            i += len(STOP)
        elif generated[i] == EMPTY[0]:
            i += len(EMPTY)
        else:
            n, i = n + 1, i + 1
    return n


def logprob(token: int, n: int) -> float:
    return -0.01 * token - 0.001 * n


class Script:
    """A deterministic 'model': row ``i`` writes ``streams[i]`` whatever was forced in between;
    past its end it writes filler token 50."""

    def __init__(self, prompts: list[list[int]], streams: list[list[int]]) -> None:
        self.prompts, self.streams = prompts, streams

    def next(self, row: int, context: list[int]) -> tuple[int, float]:
        n = own_tokens(context[len(self.prompts[row]) :])
        stream = self.streams[row]
        token = stream[n] if n < len(stream) else 50
        return token, logprob(token, n)

    def rounds(self, max_new_tokens: int, budgets, eos=(EOS,)):
        """Generation in rounds, each call continuing a row for up to its max tokens."""
        calls: list[list[int]] = []

        def generate(contexts, max_tokens, seeds):
            calls.append(list(max_tokens))
            out = []
            for context, limit in zip(contexts, max_tokens, strict=True):
                row = next(i for i, p in enumerate(self.prompts) if context[: len(p)] == p)
                context, tokens, logps, finished = list(context), [], [], False
                while len(tokens) < limit:
                    token, lp = self.next(row, context)
                    tokens.append(token)
                    logps.append(lp)
                    context.append(token)
                    if token in eos:
                        finished = True
                        break
                out.append((tokens, logps, finished))
            return out

        budget = resolve_thinking_budget(budgets, len(self.prompts)).tolist()
        rollouts = generate_in_rounds(
            self.prompts, budget, [0] * len(budget), generate, rules(max_new_tokens, eos), PAD
        )
        return rollouts, calls

    def token_by_token(self, max_new_tokens: int, budgets, eos=(EOS,)):
        """The built-in sampler's loop (``RolloutSampler._loop``) with the script as model."""
        prompt_ids, prompt_mask = left_pad(self.prompts, PAD)
        table = forced_table(STOP, EMPTY, PAD)
        lengths = torch.tensor([len(STOP), len(EMPTY)])
        budget = resolve_thinking_budget(budgets, len(self.prompts))
        state = BudgetState(prompt_ids, prompt_mask, budget, TOKENS, table, lengths)
        contexts = [list(p) for p in self.prompts]
        alive = torch.ones(len(self.prompts), dtype=torch.bool)
        columns = []
        for _ in range(max_new_tokens):
            forcing, forced_ids = state.next_forced()
            drawn = [self.next(i, contexts[i]) for i in range(len(contexts))]
            tokens = torch.tensor([t for t, _ in drawn])
            logps = torch.tensor([lp for _, lp in drawn])
            if forcing is not None:
                tokens = torch.where(forcing, forced_ids, tokens)
                logps = torch.where(forcing, torch.zeros_like(logps), logps)
            else:
                forcing = torch.zeros_like(alive)
            columns.append((tokens, alive.clone(), logps, forcing & alive))
            for i, token in enumerate(tokens.tolist()):
                contexts[i].append(token)
            alive = alive & ~torch.isin(tokens, torch.tensor(eos))
            state.advance(tokens, forcing, alive)
            if not bool(alive.any()):
                break
        ids, mask, logps, forced = (torch.stack(c, dim=1) for c in zip(*columns, strict=True))
        return {
            "completion_ids": ids.masked_fill(~mask, PAD),
            "completion_mask": mask.long(),
            "sampling_logprobs": logps.masked_fill(~mask, 0.0),
            "forced_mask": forced.long(),
            "thinking_length": state.count,
            "budget_forced": state.forced_any,
            "truncated": alive,
        }


def same_as_token_by_token(script: Script, max_new_tokens: int, budgets, eos=(EOS,)):
    rollouts, calls = script.rounds(max_new_tokens, budgets, eos)
    expected = script.token_by_token(max_new_tokens, budgets, eos)
    for name, value in expected.items():
        got = getattr(rollouts, name)
        assert torch.equal(got, value.to(got.dtype)), (name, got, value)
    return rollouts, calls


PROMPT = [10, 11, 12]
PROMPT_OPEN = [10, 11, THINK]  # the template pre-opened the block


def test_budget_cut_in_a_pre_opened_block_hand_computed():
    script = Script([PROMPT_OPEN], [[20, 21, 22, 23, 24, 25, END_THINK, 30, EOS]])
    rollouts, calls = same_as_token_by_token(script, 32, 3)
    # three thinking tokens, the stop text, then the stream goes on (the model answers)
    assert rollouts.completion_ids[0].tolist() == [
        20,
        21,
        22,
        *STOP,
        23,
        24,
        25,
        END_THINK,
        30,
        EOS,
    ]
    assert rollouts.forced_mask[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert rollouts.thinking_length.tolist() == [3]
    assert rollouts.budget_forced.tolist() == [True]
    assert rollouts.truncated.tolist() == [False]
    # two engine calls: the first asks for exactly the budget, the second for the rest
    assert calls == [[3], [32 - 3 - len(STOP)]]
    assert rollouts.policy_mask()[0].tolist() == [True] * 3 + [False] * 4 + [True] * 6


def test_budget_zero_closes_a_pre_opened_block_before_generating():
    script = Script([PROMPT_OPEN], [[30, 31, EOS]])
    rollouts, calls = same_as_token_by_token(script, 16, 0)
    assert rollouts.completion_ids[0].tolist() == [*EMPTY, 30, 31, EOS]
    assert rollouts.thinking_length.tolist() == [0]
    assert calls == [[16 - len(EMPTY)]]


def test_model_opened_block_is_cut_after_discarding_what_followed():
    # the model opens <think> itself: the first call cannot know where the budget falls, so
    # it generates on, and what came after the budget point is discarded and regenerated
    script = Script([PROMPT], [[THINK, 20, 21, 22, 23, END_THINK, 30, EOS]])
    rollouts, calls = same_as_token_by_token(script, 24, 2)
    assert rollouts.completion_ids[0].tolist() == [THINK, 20, 21, *STOP, 22, 23, END_THINK, 30, EOS]
    assert calls[0] == [24]


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3, 4, 5, 6, 7, 9, 12, 40])
def test_many_rows_match_the_token_by_token_rule(max_new_tokens):
    streams = [
        [20, 21, 22, 23, END_THINK, 30, EOS],  # closes its own block within the budget
        [20, 21, 22, 23, 24, 25, 26, 27, 28, EOS],  # thinks past the budget
        [THINK, 20, END_THINK, THINK, 21, 22, 23, END_THINK, 30, EOS],  # reopens: same count
        [THINK, 20, 21, 22, 23, 24, EOS],  # opens, budget 0: the empty form at once
        [20, THINK, 21, 22, END_THINK, 30, 31, 32, EOS],  # nested <think> is a thinking token
        [THINK, 20, 21, 22, END_THINK, 30, TOOL_END, 31, EOS],  # a stop token ends it
        [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41],  # never thinks, never ends
    ]
    prompts = [PROMPT_OPEN, PROMPT_OPEN, PROMPT, PROMPT, PROMPT_OPEN, PROMPT, PROMPT]
    prompts = [[100 + i, *p] for i, p in enumerate(prompts)]  # distinct prompts
    budgets = [5, 3, 3, 0, 2, None, 1]
    script = Script(prompts, streams)
    rollouts, _ = same_as_token_by_token(script, max_new_tokens, budgets, eos=(EOS, TOOL_END))
    assert (rollouts.thinking_length <= torch.tensor([5, 3, 3, 0, 2, 10**9, 1])).all()


def test_ignore_eos_runs_every_row_to_the_limit():
    script = Script([PROMPT_OPEN, PROMPT], [[20, EOS, 21, 22, 23], [EOS, 30]])
    rollouts, _ = same_as_token_by_token(script, 10, [2, None], eos=())
    assert rollouts.completion_mask.sum(-1).tolist() == [10, 10]
    assert rollouts.truncated.tolist() == [True, True]


# ----------------------------------------------------------------------------- a real model
@pytest.fixture(scope="module")
def toy():
    from lit_qwen3.models import load_model
    from lit_qwen3.tokenizer import build_toy_tokenizer

    return load_model("toy-student", seed=3).eval(), build_toy_tokenizer()


def test_rounds_of_greedy_generate_match_the_builtin_sampler(toy):
    """Greedy ``model.generate`` calls in rounds give the built-in sampler's rollouts: tokens,
    forced mask, lengths, flags, and the log-probs of the tokens the model chose."""
    model, tokenizer = toy
    tokens = ThinkTokens.from_tokenizer(tokenizer)
    gen = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(20, 200, (n,), generator=gen).tolist() + tail
        for n, tail in [(5, [tokens.think_start_id]), (7, []), (4, [tokens.think_start_id])] * 2
    ]
    budgets = [4, 3, 0, None, 9, 1]
    config = SamplingConfig(max_new_tokens=14, do_sample=False)
    sampler = RolloutSampler(tokenizer, config)
    expected = sampler.sample(model, prompts, thinking_budget=budgets)

    def generate(contexts, max_tokens, seeds):
        out = []
        for context, limit in zip(contexts, max_tokens, strict=True):
            result = model.generate(
                torch.tensor([context]),
                max_new_tokens=limit,
                do_sample=False,
                eos_token_id=list(tokens.eos_token_ids),
                pad_token_id=tokens.pad_token_id,
                output_logits=True,
                return_dict_in_generate=True,
            )
            ids = result.sequences[0, len(context) :].tolist()
            logps = [
                float(torch.log_softmax(step[0].float(), -1)[t])
                for step, t in zip(result.logits, ids, strict=False)
            ]
            out.append((ids, logps, ids[-1] in tokens.eos_token_ids))
        return out

    rules = BudgetRules(
        config.max_new_tokens,
        tokens.eos_token_ids,
        tokens.think_start_id,
        tokens.think_end_id,
        tuple(sampler.stop_ids),
        tuple(sampler.empty_ids),
    )
    got = generate_in_rounds(
        prompts,
        resolve_thinking_budget(budgets, 6).tolist(),
        [0] * 6,
        generate,
        rules,
        tokens.pad_token_id,
    )
    for name in (
        "completion_ids",
        "completion_mask",
        "forced_mask",
        "thinking_length",
        "budget_forced",
        "truncated",
        "prompt_ids",
        "prompt_mask",
    ):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name
    assert got.budget_forced.any() and not got.budget_forced.all()
    policy = expected.policy_mask()
    torch.testing.assert_close(got.logprobs[policy], expected.logprobs[policy], atol=1e-4, rtol=0)
    assert (got.logprobs[got.forced_mask.bool()] == 0).all()


# ----------------------------------------------------------------------------- missing vLLM
@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
def test_sampler_without_vllm_says_what_to_install(toy):
    from lit_qwen3.rollout.vllm_rollouts import VLLMRolloutSampler

    with pytest.raises(ImportError, match=r"needs vLLM.*" + INSTALL_HINT.replace("[", r"\[")):
        VLLMRolloutSampler(toy[1])


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
@pytest.mark.parametrize("stage", ["GroupRelativeRL", "OnPolicyDistillation"])
def test_stage_with_vllm_backend_fails_at_construction(stage):
    import lit_qwen3.stages as stages

    cls = getattr(stages, stage)
    with pytest.raises(ImportError) as error:
        cls(rollout_backend="vllm")
    message = str(error.value)
    assert "\n" not in message and INSTALL_HINT in message and "rollout_backend: builtin" in message


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
@pytest.mark.parametrize("config", ["reasoning_rl.yaml", "distill_on_policy.yaml"])
def test_yaml_selecting_vllm_fails_before_anything_runs(config, monkeypatch, tmp_path):
    from pathlib import Path

    from lit_qwen3.cli import main

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setattr("sys.argv", ["lit-qwen3"])
    monkeypatch.chdir(tmp_path)
    override = tmp_path / "vllm.yaml"
    override.write_text("model:\n  init_args:\n    rollout_backend: vllm\n")
    args = ["fit", "--config", str(repo / "configs/toy" / config), "--config", str(override)]
    with pytest.raises(ImportError, match=INSTALL_HINT.replace("[", r"\[")):
        main(args)
    assert [p.name for p in tmp_path.iterdir()] == ["vllm.yaml"]  # no run directory made


def test_unknown_rollout_backend_is_named():
    from lit_qwen3.stages import GroupRelativeRL

    with pytest.raises(ValueError, match="rollout_backend must be one of.*'sglang'"):
        GroupRelativeRL(rollout_backend="sglang")
