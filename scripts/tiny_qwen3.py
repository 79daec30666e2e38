"""Write the two Qwen3-0.6B-shaped tiny models that configs/qwen3/pipeline_smoke.yaml loads.

    python scripts/tiny_qwen3.py runs/qwen3-pipeline-smoke/models --tokenizer DIR

``DIR`` holds the real Qwen3 tokenizer (``hf download Qwen/Qwen3-0.6B --include 'tokenizer*'
'vocab.json' 'merges.txt'``, or any Qwen3 checkpoint directory). ``flagship`` keeps Qwen3-0.6B's
config keys at 2 layers of width 64; ``student`` is narrower (1 layer of width 32), so the smoke
distils a larger model into a smaller one with the same vocabulary, as the real pipeline does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_qwen3.models import save_qwen3_shaped

FLAGSHIP = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
}
STUDENT = {**FLAGSHIP, "hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64}


def write_models(out: str | Path, tokenizer: str | Path) -> dict[str, Path]:
    """``out/flagship`` and ``out/student``: random weights, the real tokenizer."""
    out = Path(out)
    return {
        "flagship": save_qwen3_shaped(out / "flagship", tokenizer, seed=0, **FLAGSHIP),
        "student": save_qwen3_shaped(out / "student", tokenizer, seed=1, **STUDENT),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where flagship/ and student/ are written")
    parser.add_argument("--tokenizer", required=True, help="a directory with the Qwen3 tokenizer")
    args = parser.parse_args()
    for name, path in write_models(args.out, args.tokenizer).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
