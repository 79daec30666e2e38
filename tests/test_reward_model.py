"""Scalar reward model (batched scoring of prompt + answer), preference-pair data, and a tiny
Bradley-Terry reward model that learns a synthetic preference with a plain Lightning Trainer."""

from __future__ import annotations

import json
import random
import warnings

import lightning
import pytest
import torch
from single_thread import one_thread  # noqa: F401  (autouse fixture)
from toy_models import SEED
from transformers import AutoModelForCausalLM, Qwen3ForSequenceClassification

from lit_qwen3.datamodules.preference_pairs import (
    PreferencePairsDataModule,
    collate_pairs,
    read_preference_pairs,
)
from lit_qwen3.models import save_toy_checkpoint, tiny_qwen3_config
from lit_qwen3.rewards import CompositeReward, Sample, build_reward
from lit_qwen3.rewards.reward_model import (
    ScalarRewardModel,
    render_for_reward_model,
    sequence_scores,
)
from lit_qwen3.runtime.optim import OptimizerConfig
from lit_qwen3.stages.reward_model import RewardModelTraining

PROMPT = [{"role": "user", "content": "Name a fast trainer. /no_think"}]


def sample(completion: str, prompt=PROMPT) -> Sample:
    return Sample.from_completion(prompt, completion)


def tiny_rm(tokenizer, seed: int = 0, **overrides) -> Qwen3ForSequenceClassification:
    torch.manual_seed(seed)
    config = tiny_qwen3_config(
        "toy-student",
        len(tokenizer),
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    return Qwen3ForSequenceClassification(config)


# --------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("tokenizer", ["toy_tokenizer", "qwen3_tokenizer"])
def test_render_is_the_chat_template_with_the_answer_only(tokenizer, request):
    tok = request.getfixturevalue(tokenizer)
    s = sample("<think>\nhmm\n</think>\n\nLightning.")
    # The official template writes an empty think block before the last assistant reply.
    assert render_for_reward_model(tok, s.prompt, s.answer) == (
        "<|im_start|>user\nName a fast trainer. /no_think<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nLightning.<|im_end|>\n"
    )


def test_batched_scores_equal_one_by_one_and_match_the_head(tmp_path, toy_tokenizer):
    tiny_rm(toy_tokenizer, initializer_range=0.2).save_pretrained(tmp_path)
    toy_tokenizer.save_pretrained(tmp_path)
    reward = build_reward("reward_model", model=str(tmp_path), batch_size=3)
    assert reward._model is None  # loaded on first use
    completions = ["Lightning.", "<think>x</think>PyTorch Lightning, obviously!", "A", "no " * 30]
    samples = [sample(c) for c in completions]
    batched = reward.score_batch(samples)
    single = [reward.score(s) for s in samples]
    torch.testing.assert_close(
        [r.score for r in batched], [r.score for r in single], atol=1e-5, rtol=1e-5
    )
    assert len({round(r.score, 4) for r in batched}) == len(samples)  # scores differ per reply
    # Independent reference: the HF head on the unpadded sequence, logits at its last token.
    text = render_for_reward_model(toy_tokenizer, PROMPT, "Lightning.")
    ids = toy_tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = reward.model(input_ids=ids).logits[0, 0].item()
    assert batched[0].score == pytest.approx(expected, abs=1e-5)
    assert batched[0].info == {"raw": pytest.approx(expected, abs=1e-5), "truncated": False}


def test_scale_shift_truncation_and_empty_answers(toy_tokenizer):
    model = tiny_rm(toy_tokenizer, initializer_range=0.2)
    raw = ScalarRewardModel(model, toy_tokenizer).score(sample("Lightning.")).score
    normalised = ScalarRewardModel(model, toy_tokenizer, scale=2.0, shift=0.5)
    assert normalised.score(sample("Lightning.")).score == pytest.approx((raw - 0.5) / 2.0)
    # Truncation keeps the end of the reply: the last 8 tokens of two texts that differ only at
    # the start give the same score.
    short = ScalarRewardModel(model, toy_tokenizer, max_length=8)
    a = short.score(sample("Lightning.", [{"role": "user", "content": "first question"}]))
    b = short.score(sample("Lightning.", [{"role": "user", "content": "other question"}]))
    assert a.info["truncated"] and a.score == pytest.approx(b.score, abs=1e-6)
    # Thinking never closed: empty answer. Scored by the model unless empty_answer_score is set.
    truncated = sample("<think>\nstill thinking")
    assert truncated.answer == ""
    assert "error" not in ScalarRewardModel(model, toy_tokenizer).score(truncated).info
    guarded = ScalarRewardModel(model, toy_tokenizer, empty_answer_score=-3.0)
    assert guarded.score(truncated).score == -3.0


def test_reward_model_bad_input(tmp_path, toy_tokenizer):
    model = tiny_rm(toy_tokenizer)
    with pytest.raises(ValueError, match="pass `tokenizer`"):
        ScalarRewardModel(model)
    with pytest.raises(ValueError, match="scale must be > 0"):
        ScalarRewardModel(model, toy_tokenizer, scale=0.0)
    with pytest.raises(FileNotFoundError, match="local directories only"):
        ScalarRewardModel(tmp_path / "missing", toy_tokenizer).score(sample("x"))
    two_labels = tiny_rm(toy_tokenizer)
    two_labels.config.num_labels = 2
    with pytest.raises(ValueError, match="num_labels=2, expected 1"):
        ScalarRewardModel(two_labels, toy_tokenizer).score(sample("x"))
    mutated = sample("x")
    mutated.answer = 42  # Sample checks types at construction; a reward checks again
    with pytest.raises(TypeError, match="sample.answer must be a str, got int"):
        ScalarRewardModel(model, toy_tokenizer).score(mutated)
    pad = toy_tokenizer.pad_token
    with pytest.raises(ValueError, match="pad token id .* occurs inside a sequence"):
        ScalarRewardModel(model, toy_tokenizer).score(sample(f"text {pad} with pad"))
    with pytest.raises(ValueError, match=r"unknown reward 'rm'.*reward_model"):
        build_reward("rm", model=str(tmp_path))


def test_in_a_composite_with_rule_rewards(toy_tokenizer):
    rm = ScalarRewardModel(tiny_rm(toy_tokenizer, initializer_range=0.2), toy_tokenizer)
    composite = CompositeReward(
        [{"name": "instructions", "weight": 1.0}, {"reward": rm, "weight": 0.5}], num_workers=0
    )
    metadata = {
        "instruction_id_list": ["keywords:existence"],
        "kwargs": [{"keywords": ["lightning"]}],
    }
    samples = [
        Sample.from_completion(PROMPT, c, metadata=metadata) for c in ("Lightning.", "Keras.")
    ]
    results = composite.score_batch(samples)
    raw = [r.score for r in rm.score_batch(samples)]
    # total = 1.0 * instructions + 0.5 * reward model
    assert [r.score for r in results] == pytest.approx([1.0 + 0.5 * raw[0], 0.0 + 0.5 * raw[1]])
    assert results[0].info["scores"]["reward_model"] == pytest.approx(raw[0])


# --------------------------------------------------------------------------- data


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_read_pairs_and_collate(tmp_path, toy_tokenizer):
    path = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "Q1", "chosen": "<think>why</think>good", "rejected": "bad", "id": 7},
            "",  # blank lines are skipped
            {
                "prompt": [{"role": "user", "content": "Q2"}],
                "chosen": "a",
                "rejected": "bb",
                "margin": 2,
            },
        ],
    )
    pairs = read_preference_pairs(path)
    assert [p.chosen for p in pairs] == ["good", "a"]  # thinking dropped, like every reward
    assert pairs[0].prompt == [{"role": "user", "content": "Q1"}] and pairs[1].margin == 2.0
    items = [
        {"chosen_input_ids": [5, 6, 7], "rejected_input_ids": [8], "margin": None},
        {"chosen_input_ids": [9], "rejected_input_ids": [10, 11], "margin": 1.5},
    ]
    batch = collate_pairs(items, pad_id=0)
    assert batch["chosen_input_ids"].tolist() == [[5, 6, 7], [9, 0, 0]]
    assert batch["rejected_input_ids"].tolist() == [[8, 0, 0], [10, 11, 0]]
    assert batch["rejected_attention_mask"].tolist() == [[1, 0, 0], [1, 1, 0]]
    assert batch["margin"].tolist() == [0.0, 1.5]


def test_not_utf8_line_names_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "\xe9"}\n')
    with pytest.raises(ValueError, match=r"pairs.jsonl:2: not UTF-8 text \(byte 0xe9"):
        read_preference_pairs(path)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"pairs.jsonl:2: invalid JSON"),
        ('["a", "b"]', r"pairs.jsonl:2: expected a JSON object"),
        ('{"prompt": "q", "chosen": "a"}', r"pairs.jsonl:2: missing key\(s\) \['rejected'\]"),
        ('{"prompt": "q", "chosen": 3, "rejected": "b"}', r":2: 'chosen' must be a string"),
        (
            '{"prompt": "q", "chosen": "<think>only", "rejected": "b"}',
            r":2: 'chosen' has no answer",
        ),
        ('{"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}', r":2: prompt\[0\] must"),
        ('{"prompt": "", "chosen": "a", "rejected": "b"}', r":2: 'prompt' is empty"),
        ('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": "x"}', r":2: 'margin' must"),
        # Accepted before (issue 13): an unknown role, a pair that prefers nothing, huge margins.
        (
            '{"prompt": [{"role": "wizard", "content": "q"}], "chosen": "a", "rejected": "b"}',
            r":2: prompt\[0\] has role 'wizard', expected one of",
        ),
        ('{"prompt": "q", "chosen": "a", "rejected": "a"}', r":2: 'chosen' and 'rejected' have"),
        (
            '{"prompt": "q", "chosen": "<think>x</think>a", "rejected": "<think>y</think> a"}',
            r":2: 'chosen' and 'rejected' have the same answer 'a' \(thinking aside\)",
        ),
        ('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1e300}', r"in \[-100, 100\]"),
        ('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": NaN}', r":2: 'margin' must"),
        ('{"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1' + "0" * 400 + "}", "must"),
        ("[" * 100_000, r":2: JSON nested too deeply"),
        ('{"prompt": "\\udc00", "chosen": "a", "rejected": "b"}', r":2: a string holds a lone"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, match):
    path = write_jsonl(
        tmp_path / "pairs.jsonl", ['{"prompt": "q", "chosen": "a", "rejected": "b"}', line]
    )
    with pytest.raises(ValueError, match=match):
        read_preference_pairs(path)


def test_empty_or_missing_file_and_bad_arguments(tmp_path, toy_tokenizer):
    with pytest.raises(ValueError, match="has no pairs"):
        read_preference_pairs(write_jsonl(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        read_preference_pairs(tmp_path / "nowhere.jsonl")
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        PreferencePairsDataModule(str(tmp_path / "x.jsonl"), toy_tokenizer, val_fraction=1.0)
    one = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(ValueError, match="too few to hold out"):
        PreferencePairsDataModule(str(one), toy_tokenizer, val_fraction=0.5).setup("fit")


# --------------------------------------------------------------------------- training

FILLER = "the a fast model runs on data with small steps and good tests".split()


def synthetic_pairs(n: int, seed: int) -> list[dict]:
    """Chosen replies mention "lightning", rejected ones "thunder"; otherwise alike."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(3, 6))
        position = rng.randint(0, len(words))
        chosen, rejected = (" ".join([*words[:position], w, *words[position:]])
                            for w in ("lightning", "thunder"))  # fmt: skip
        rows.append({"prompt": f"Item {i}: say something.", "chosen": chosen, "rejected": rejected})
    return rows


@pytest.mark.slow
@pytest.mark.learning
def test_tiny_reward_model_learns_a_preference_and_exports(tmp_path, toy_tokenizer):
    """Bradley-Terry training on synthetic pairs: held-out accuracy rises from chance to ~1, the
    exported directory loads as the `reward_model` reward and ranks unseen pairs."""
    toy_tokenizer.save_pretrained(tmp_path / "tok")
    path = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(160, seed=SEED))
    data = PreferencePairsDataModule(
        str(path), str(tmp_path / "tok"), max_length=64, batch_size=16, val_fraction=0.2
    )
    module = RewardModelTraining(
        "toy-student",
        output_dir=str(tmp_path / "rm"),
        optimizer=OptimizerConfig(lr=3e-3, warmup_steps=5, weight_decay=0.0),
        seed=SEED,
    )
    trainer = lightning.Trainer(
        max_steps=40,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    module.configure_model()
    data.setup("fit")
    before = trainer.validate(module, data, verbose=False)[0]
    lightning.seed_everything(SEED, verbose=False)
    trainer.fit(module, data)
    assert trainer.callback_metrics["train/accuracy"] >= 0.9  # last training batch
    assert "train/loss" in trainer.callback_metrics
    after = trainer.validate(module, data, verbose=False)[0]
    # Untrained: loss ~ log 2 = 0.693 and chance accuracy (32 pairs: two standard errors of a
    # coin are 0.18); trained: the keyword decides.
    assert before["val/loss"] > 0.6 and before["val/accuracy"] <= 0.68
    assert after["val/accuracy"] >= 0.95 and after["val/loss"] < 0.1
    assert after["val/reward_gap"] > 2.0

    reward = build_reward("reward_model", model=str(tmp_path / "rm"))
    unseen = synthetic_pairs(20, seed=SEED + 1)
    chosen = reward.score_batch(
        [sample(r["chosen"], [{"role": "user", "content": r["prompt"]}]) for r in unseen]
    )
    rejected = reward.score_batch(
        [sample(r["rejected"], [{"role": "user", "content": r["prompt"]}]) for r in unseen]
    )
    wins = sum(c.score > r.score for c, r in zip(chosen, rejected, strict=True))
    assert wins >= 18


def test_model_sources_causal_lm_dir_and_config_file(tmp_path, toy_tokenizer):
    # The usual start: the SFT policy's directory; the transformer is kept, the head is new.
    policy_dir = save_toy_checkpoint(tmp_path / "policy", preset="toy-student", seed=3)
    module = RewardModelTraining(str(policy_dir))
    module.configure_model()
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)
    assert isinstance(module.model, Qwen3ForSequenceClassification)
    assert module.model.config.num_labels == 1
    assert module.model.config.pad_token_id == toy_tokenizer.pad_token_id
    torch.testing.assert_close(
        module.model.model.embed_tokens.weight, policy.model.embed_tokens.weight
    )
    # A config file: random init of that architecture, tokenizer given separately.
    config = tiny_qwen3_config("toy-student", len(toy_tokenizer), hidden_size=32, head_dim=8)
    config.to_json_file(tmp_path / "rm_config.json")
    module = RewardModelTraining(str(tmp_path / "rm_config.json"), tokenizer=str(policy_dir))
    module.configure_model()
    assert module.model.config.hidden_size == 32 and module.model.config.num_labels == 1
    with pytest.raises(FileNotFoundError, match="not found"):
        RewardModelTraining("./no/such/dir", tokenizer=str(policy_dir)).configure_model()


def test_module_bad_input(tmp_path, toy_tokenizer):
    with pytest.raises(ValueError, match="unknown tiny preset|not a tiny preset|unknown model"):
        RewardModelTraining("toy-giant")
    config = tmp_path / "config.json"
    config.write_text("{}")
    with pytest.raises(ValueError, match="is a config file: pass `tokenizer`"):
        RewardModelTraining(str(config))
    module = RewardModelTraining("toy-student")
    module.configure_model()
    first = module.model
    module.configure_model()
    assert module.model is first  # idempotent
    scores = sequence_scores(module.model, torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 1]]))
    assert scores.shape == (1,)


def test_step_loss_uses_margin_only_when_asked(toy_tokenizer):
    batch = collate_pairs(
        [
            {"chosen_input_ids": [40, 41, 42], "rejected_input_ids": [43], "margin": 1.0},
            {"chosen_input_ids": [44], "rejected_input_ids": [45, 46], "margin": 0.5},
        ],
        pad_id=toy_tokenizer.pad_token_id,
    )
    for use_margin in (True, False):
        module = RewardModelTraining("toy-student", use_margin=use_margin)
        module.configure_model()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log outside a Trainer
            loss = module._step(batch, "train")
            chosen = module(batch["chosen_input_ids"], batch["chosen_attention_mask"])
            rejected = module(batch["rejected_input_ids"], batch["rejected_attention_mask"])
        margin = torch.tensor([1.0, 0.5]) if use_margin else 0.0
        # Bradley-Terry: mean over pairs of -log sigmoid(r_chosen - r_rejected - margin)
        expected = -torch.nn.functional.logsigmoid(chosen - rejected - margin).mean()
        torch.testing.assert_close(loss, expected)
