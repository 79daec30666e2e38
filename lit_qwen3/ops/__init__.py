"""The training math as pure tensor functions: no Lightning, no model loading, no I/O.

- ``logprobs``: log-probs and entropy of chosen tokens, chunked over the vocabulary; with a
  truncating sampler, under the distribution the token was drawn from.
- ``truncation``: the sampler's top-k / top-p / min-p support, one rule for sampler and trainer.
- ``losses``: SFT cross-entropy, GRPO and its variants, KL estimators, Bradley-Terry.
- ``policy_objectives``: GSPO, SAPO, CISPO, Clip-Cov, KL-Cov, high-entropy tokens and the
  sampler/trainer mismatch weights, the pieces ``grpo_loss`` composes.
- ``advantages``: pass@k advantages (verl's ``grpo_passk``, the analytic pass@k form).
- ``distill_losses`` and ``distill_kernel``: distillation divergences, from logits or from
  hidden states without ever building ``tokens x vocab`` logits.
- ``training_forward``: the policy's forward with no padding masks; packed rows unpacked.
- ``packing``: chat examples as tensors, assistant-only masks, packing and collate.
- ``tensor_checks``: the input checks, masks and reductions the losses share.
- ``metrics``: pass@k, maj@k and torchmetrics that sync exactly across ranks.
- ``intervals``: bootstrap intervals over problems, paired differences, and the verdicts a
  report draws from them.

Everything here can be tested against hand-computed values and lifted into another project.
"""

from lit_qwen3.ops.distill_kernel import DistillationTerms, chunked_distillation
from lit_qwen3.ops.distill_losses import (
    DIVERGENCES,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    teacher_topk,
    topk_forward_kl,
    topk_reverse_kl,
)
from lit_qwen3.ops.intervals import Interval, bootstrap_mean, paired_difference, verdict
from lit_qwen3.ops.logprobs import (
    IGNORE_INDEX,
    chunked_logprobs_and_entropy,
    token_entropy,
    token_logprobs,
    truncated_logprobs,
)
from lit_qwen3.ops.losses import (
    GRPOLossConfig,
    bradley_terry_loss,
    causal_lm_loss,
    group_advantages,
    grpo_loss,
    kl_estimate,
    masked_cross_entropy,
)
from lit_qwen3.ops.metrics import MeanTokenEntropy, PassAtK, maj_at_k, pass_at_k
from lit_qwen3.ops.packing import (
    collate_packed,
    collate_padded,
    pack_sequences,
    tokenize_conversation,
)
from lit_qwen3.ops.training_forward import causal_hidden_states, packed_hidden_states, right_align
from lit_qwen3.ops.truncation import kept_threshold

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "DistillationTerms",
    "GRPOLossConfig",
    "Interval",
    "MeanTokenEntropy",
    "PassAtK",
    "bootstrap_mean",
    "bradley_terry_loss",
    "causal_hidden_states",
    "causal_lm_loss",
    "chunked_distillation",
    "chunked_logprobs_and_entropy",
    "collate_packed",
    "collate_padded",
    "forward_kl",
    "generalized_jsd",
    "group_advantages",
    "grpo_loss",
    "kept_threshold",
    "kl_estimate",
    "maj_at_k",
    "masked_cross_entropy",
    "pack_sequences",
    "packed_hidden_states",
    "paired_difference",
    "pass_at_k",
    "reverse_kl",
    "right_align",
    "teacher_topk",
    "token_entropy",
    "token_logprobs",
    "tokenize_conversation",
    "topk_forward_kl",
    "topk_reverse_kl",
    "truncated_logprobs",
    "verdict",
]
