"""The Qwen3 post-training recipe as reusable PyTorch Lightning parts.

Read it from the bottom up (imports run one way, see ``tests/test_layout.py``):

- ``chat``, ``tokenizer``, ``models``: the chat format, the toy tokenizer, loading models.
- ``ops/``: the training math as pure tensor functions.
- ``rollout/``: sampling with thinking budgets, and re-scoring what was sampled.
- ``rewards/``: verifiers, reward models, judges and the code sandbox.
- ``formats``, ``queries``, ``evaluation``, ``tools``, ``agent``: public datasets' rows, prompts,
  pass@k evaluation, tool use.
- ``runtime/``: checkpoints, faults, optimiser, strategies, export, MLflow tracking.
- ``stages/``: one LightningModule per stage; ``curation/``: the cold-start data filters.
- ``recipe/``: the whole pipeline and its report; ``cli``: the ``lit-qwen3`` command.

``lit_qwen3.datamodules`` and ``lit_qwen3.callbacks`` live in the repository's top-level
``datamodules/`` and ``callbacks/`` folders.
"""
