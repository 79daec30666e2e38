"""Stage 4 of the Qwen3 recipe: general RL (report section 4.4).

The same GRPO engine as reasoning RL, over many tasks at once: each query names the rewards
that score it (``reward.names``), so one batch mixes rule-based rewards (math, code, format and
flag following, instruction following), model-based rewards with a reference (the judge) and
without one (a scalar reward model), and agent queries whose rollouts call tools. For flag
following, configs set ``template_switch: false``: the ``/think`` and ``/no_think`` flags in the
text are the only cue, and the policy must write (or leave empty) the thinking block itself.
"""

from __future__ import annotations

from lit_qwen3.stages.grpo import GroupRelativeRL


class GeneralRL(GroupRelativeRL):
    """GRPO over mixed tasks and reward kinds; arguments as :class:`GroupRelativeRL`."""

    stage = "general_rl"
