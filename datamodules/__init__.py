"""LightningDataModules and datasets of the recipe (installed as ``lit_qwen3.datamodules``).

- ``arithmetic``: the embedded toy task (generator, chain-of-thought traces, verifier); pure Python.
- ``conversations``: ``ConversationDataModule``, chat SFT with assistant-only loss and packing.
- ``preference_pairs``: ``PreferencePairsDataModule``, (prompt, chosen, rejected) for reward models.
- ``toy_instructions``: IFEval-format instruction prompts on the toy questions, and compliant replies.
- ``jsonl``: ``iter_jsonl``, the JSONL reader both use; every error names the file and line.
- ``resumable``: ``ResumableDataLoader``, a DataLoader whose position in the epoch survives a
  checkpoint (a killed run resumes at the next batch); train loaders should use it.

Import the module you need; this package imports nothing, so the pure toy task stays light.
"""
