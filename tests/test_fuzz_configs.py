"""Config dataclasses on random values: accepted exactly when valid, else an error naming the field.

Each field gets values of every type (numbers of all sizes, NaN, inf, bools, strings, None,
lists) and an independent statement of what is valid; a config is built with that one field
changed. A YAML typo reaches these classes through jsonargparse, but Python callers (and
``--print_config``-edited files) reach them directly.
"""

from __future__ import annotations

import math
from numbers import Real

from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from lit_qwen3.ops.losses import GRPOLossConfig
from lit_qwen3.rollout.generation import MIN_TEMPERATURE, SamplingConfig
from lit_qwen3.runtime.optim import OptimizerConfig

values = st.one_of(
    st.integers(-3, 3),
    st.integers(),
    st.floats(),  # NaN and +-inf included
    st.floats(0, 1),
    st.sampled_from([0.0, 1.0, 1e-300, -0.0, 1.5, 2]),
    st.booleans(),
    st.none(),
    st.sampled_from(["0.1", "", "token_mean", "k3", "nan"]),
    st.lists(st.floats(0, 1), max_size=3),
    st.tuples(st.floats(0, 1), st.floats(0, 1)),
)


def real(v: object) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def integer(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


SAMPLING = {
    "max_new_tokens": lambda v: integer(v) and v >= 1,
    "top_k": lambda v: integer(v) and v >= 0,
    "top_p": lambda v: real(v) and 0 < v <= 1,
    "min_p": lambda v: real(v) and 0 <= v < 1,
    "temperature": lambda v: real(v) and v >= MIN_TEMPERATURE,  # do_sample=True
    "do_sample": lambda v: isinstance(v, bool),
    "ignore_eos": lambda v: isinstance(v, bool),
}
OPTIMIZER = {
    "lr": lambda v: real(v) and v > 0,
    "weight_decay": lambda v: real(v) and v >= 0,
    "betas": lambda v: (
        isinstance(v, (tuple, list)) and len(v) == 2 and all(real(b) and 0 <= b < 1 for b in v)
    ),
    "eps": lambda v: real(v) and v > 0,
    "warmup_steps": lambda v: integer(v) and v >= 0,
    "min_lr_ratio": lambda v: real(v) and 0 <= v <= 1,
    "fused": lambda v: v is None or isinstance(v, bool),
}
MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
GRPO = {
    "eps_low": lambda v: real(v) and 0 <= v < 1,
    "eps_high": lambda v: real(v) and v >= 0,
    "dual_clip": lambda v: v is None or (real(v) and v > 1),
    "loss_agg_mode": lambda v: (
        v in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
    ),
    "kl_coef": lambda v: real(v) and v >= 0,
    "kl_estimator": lambda v: v in ("k1", "k2", "k3"),
    "entropy_coef": real,
    "tis_cap": lambda v: v is None or (real(v) and v > 0),
    "max_tokens": lambda v: v is None or (integer(v) and v >= 1),
    "policy_loss": lambda v: v in ("clip", "cispo", "sapo", "clip_cov", "kl_cov"),
    "importance_sampling_level": lambda v: v in ("token", "sequence", "sequence_token"),
    "sapo_temperature_pos": lambda v: real(v) and v > 0,
    "sapo_temperature_neg": lambda v: real(v) and v > 0,
    "cispo_max": lambda v: real(v) and v > 0,
    "clip_cov_ratio": lambda v: real(v) and 0 < v <= 1,
    "clip_cov_lb": lambda v: real(v) and v < 5.0,  # below the default upper bound
    "clip_cov_ub": lambda v: real(v) and v > 1.0,  # above the default lower bound
    "kl_cov_ratio": lambda v: real(v) and 0 < v <= 1,
    "kl_cov_coef": lambda v: real(v) and v >= 0,
    "top_entropy_quantile": lambda v: real(v) and 0 < v <= 1,
    "rollout_is": lambda v: v is None or v in MODES,
    "rollout_is_min": lambda v: v is None or (real(v) and 0 < v < 3.0),  # below the default max
    "rollout_is_max": lambda v: v is None or (real(v) and v > 0),
}


def check(config_class, prefix: str, field: str, value: object, valid: bool) -> None:
    try:
        config_class(**{field: value})
    except (TypeError, ValueError) as error:
        assert not valid, f"{field}={value!r} is valid but was refused: {error}"
        assert f"{prefix}.{field}" in str(error), f"error does not name {field}: {error}"
        return
    assert valid, f"{prefix}.{field}={value!r} was accepted"


@fuzz(400)
@given(st.sampled_from(sorted(SAMPLING)), values)
def test_sampling_config(field, value):
    check(SamplingConfig, "SamplingConfig", field, value, SAMPLING[field](value))


@fuzz(400)
@given(st.sampled_from(sorted(OPTIMIZER)), values)
def test_optimizer_config(field, value):
    check(OptimizerConfig, "optimizer", field, value, OPTIMIZER[field](value))


@fuzz(400)
@given(st.sampled_from(sorted(GRPO)), values)
def test_grpo_loss_config(field, value):
    check(GRPOLossConfig, "GRPOLossConfig", field, value, GRPO[field](value))
