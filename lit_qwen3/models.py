"""Load policies, references and teachers: a named tiny preset, a local directory, or a Qwen3 name.

Every stage reads a model through ``load_model`` and writes one with ``save_pretrained``, so a
stage's output directory is the next stage's input. Nothing here touches the network unless the
caller says ``allow_download=True``: a missing model is an error that says what to do.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from lit_qwen3.chat import require_chat_template
from lit_qwen3.tokenizer import build_toy_tokenizer


@dataclass(frozen=True)
class TinyQwen3:
    """Every hyperparameter of a small random-init ``Qwen3ForCausalLM`` (vocab comes later)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True


#: Toy models sized for steps, not parameters (TOY_NOTES: at a few-minute CPU budget the smaller
#: model wins; hidden 128 x 2 layers learned 2-4 digit sums to 0.99). With the ~300-id toy
#: vocabulary: teacher ~0.43M parameters, student ~0.12M (3.7x smaller).
TOY_PRESETS: dict[str, TinyQwen3] = {
    "toy-teacher": TinyQwen3(128, 2, 4, 2, 32, 384),
    "toy-student": TinyQwen3(64, 2, 4, 2, 16, 192),
}

#: Real Qwen3 models by short name (dense and MoE); any HF id or local directory also works.
QWEN3_MODELS: dict[str, str] = {
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-14b": "Qwen/Qwen3-14B",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def tiny_qwen3_config(preset: str | TinyQwen3, vocab_size: int, **overrides: Any) -> Qwen3Config:
    """The ``Qwen3Config`` of a tiny preset for a given vocabulary."""
    if isinstance(preset, str):
        if preset not in TOY_PRESETS:
            raise ValueError(
                f"unknown tiny preset {preset!r}; known presets: {sorted(TOY_PRESETS)}"
            )
        preset = TOY_PRESETS[preset]
    return Qwen3Config(vocab_size=vocab_size, **{**asdict(preset), **overrides})


def flash_attention_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def resolve_attn_implementation(requested: str | None = None) -> str:
    """``flash_attention_2`` when flash-attn imports and CUDA is present, else ``sdpa``."""
    if requested is None:
        return "flash_attention_2" if flash_attention_available() else "sdpa"
    if requested == "flash_attention_2" and not flash_attention_available():
        raise ValueError(
            "attn_implementation='flash_attention_2' needs CUDA and the flash-attn package "
            "(pip install 'lit-qwen3[gpu]'); use 'sdpa' or leave it unset to pick automatically"
        )
    return requested


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _unknown_model_error(name: str) -> ValueError:
    return ValueError(
        f"unknown model {name!r}: not a tiny preset ({', '.join(sorted(TOY_PRESETS))}), not a "
        f"Qwen3 name ({', '.join(QWEN3_MODELS)}), and no local directory of that name"
    )


def _resolve_source(name_or_path: str | os.PathLike) -> tuple[str, str]:
    """Classify a model reference: ('preset' | 'dir' | 'hub', resolved name or path)."""
    name = str(name_or_path)
    if name in TOY_PRESETS:
        return "preset", name
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a saved Hugging Face model")
        return "dir", str(path)
    if name.lower() in QWEN3_MODELS:
        return "hub", QWEN3_MODELS[name.lower()]
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return "hub", name  # an "org/model" id, looked up in the local HF cache
    if "/" in name or name.startswith((".", "~")):
        raise FileNotFoundError(f"model directory not found: {path}")
    raise _unknown_model_error(name)


def _missing_hub_model(hub_id: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"model {hub_id!r} is neither a local directory nor in the local Hugging Face cache, "
        f"and downloads are off. Download it once with `hf download {hub_id}` (into the cache; "
        f"or `--local-dir DIR` and pass DIR as the model), or allow downloads "
        "(allow_download=True; on the command line --model.init_args.allow_download true)"
    )


#: Files of which a saved tokenizer has at least one.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_model(
    name_or_path: str | os.PathLike,
    *,
    vocab_size: int | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
    seed: int | None = None,
    allow_download: bool = False,
) -> PreTrainedModel:
    """A causal LM from a tiny preset (random init), a local directory, or a Qwen3 / HF name.

    ``vocab_size`` applies to presets only (default: the toy tokenizer's). ``seed`` makes a
    preset's random init reproducible.
    """
    kind, source = _resolve_source(name_or_path)
    torch_dtype = resolve_dtype(dtype)
    attn = resolve_attn_implementation(attn_implementation)
    if kind == "preset":
        toy = build_toy_tokenizer()
        config = tiny_qwen3_config(
            source,
            vocab_size or len(toy),
            pad_token_id=toy.pad_token_id,
            eos_token_id=toy.eos_token_id,
        )
        config._attn_implementation = attn
        if seed is not None:
            torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
    else:
        if vocab_size is not None:
            raise ValueError("vocab_size applies to tiny presets only, not to saved models")
        kwargs: dict[str, Any] = {
            "attn_implementation": attn,
            "local_files_only": not allow_download,
        }
        kwargs["dtype"] = torch_dtype if torch_dtype is not None else "auto"
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except OSError as error:
            if kind == "hub" and not allow_download:
                raise _missing_hub_model(source) from error
            raise
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant activation checkpointing (transformers 5 name, falling back to 4.x's)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def load_tokenizer(
    name_or_path: str | os.PathLike | PreTrainedTokenizerBase, *, allow_download: bool = False
) -> PreTrainedTokenizerBase:
    """The tokenizer of ``load_model``'s argument (or ``"toy"``, or a tokenizer-only directory).

    It must have a chat template: chat data and sampling depend on it.
    """
    if isinstance(name_or_path, PreTrainedTokenizerBase):
        require_chat_template(name_or_path)
        return name_or_path
    name = str(name_or_path)
    if name == "toy":
        return build_toy_tokenizer()
    if Path(name).expanduser().is_dir():  # a model directory, or a tokenizer saved alone
        kind, source = "dir", str(Path(name).expanduser())
        if not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
            raise FileNotFoundError(
                f"{source} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): save the "
                "tokenizer there (tokenizer.save_pretrained) or pass the tokenizer's directory "
                "as `tokenizer`"
            )
    else:
        kind, source = _resolve_source(name)
    if kind == "preset":
        return build_toy_tokenizer()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not allow_download)
    except OSError as error:
        if kind == "hub" and not allow_download:
            raise _missing_hub_model(source) from error
        raise
    require_chat_template(tokenizer, source)
    return tokenizer


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def save_toy_checkpoint(
    directory: str | os.PathLike, preset: str = "toy-student", seed: int = 0
) -> Path:
    """Write a random-init preset and the toy tokenizer as a loadable HF directory (tests, demos)."""
    directory = Path(directory)
    load_model(preset, seed=seed).save_pretrained(directory)
    build_toy_tokenizer().save_pretrained(directory)
    return directory


#: Qwen3-0.6B's ``config.json`` (Qwen/Qwen3-0.6B): what a scaled-down stand-in keeps the keys of.
QWEN3_0_6B_CONFIG: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "vocab_size": 151936,
}


def save_qwen3_shaped(
    directory: str | os.PathLike, tokenizer: str | os.PathLike, seed: int = 0, **overrides: Any
) -> Path:
    """Random weights with Qwen3-0.6B's config (``overrides`` scale it down: a few layers, a
    narrow width) and a real tokenizer, saved as a Hugging Face directory: the stand-in that CPU
    smoke runs of the real-size configs load like a downloaded checkpoint."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    config = Qwen3Config(**{**QWEN3_0_6B_CONFIG, **overrides})
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    if len(tok) > config.vocab_size:
        raise ValueError(f"vocab_size {config.vocab_size} < the tokenizer's {len(tok)} tokens")
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of an HF model (the classes it names in ``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} names no decoder layer class in _no_split_modules: "
            "cannot build an FSDP2 sharding plan"
        )
    return layers


def shard_for_fsdp2(model: torch.nn.Module, mesh: Any, **kwargs: Any) -> torch.nn.Module:
    """FSDP2 plan: each decoder layer its own unit, then the root (embeddings, norm, head).

    ``kwargs`` go to every ``fully_shard`` call (``mp_policy``, ``offload_policy``,
    ``reshard_after_forward``; see :class:`~lit_qwen3.runtime.strategies.FSDP2Strategy`), except that
    the root keeps FSDP's default of staying gathered after forward: losses read the output
    head's weight after the forward (chunked log-probs from hidden states).
    """
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, **kwargs)
    root = {k: v for k, v in kwargs.items() if k != "reshard_after_forward"}
    fully_shard(model, mesh=mesh, **root)
    return model


def check_same_vocabulary(student: Any, teacher: Any, *, limit: int = 5) -> None:
    """Raise ``ValueError`` naming the first mismatching ids when two tokenizers differ.

    Strong-to-weak distillation (report section 4.5) compares the student's next-token
    distribution with the teacher's at every position, so both must index the same vocabulary:
    tokenizers that differ would compare unrelated words without any error.
    """
    s_vocab, t_vocab = student.get_vocab(), teacher.get_vocab()
    if s_vocab == t_vocab:
        return
    s_by_id = {i: tok for tok, i in s_vocab.items()}
    t_by_id = {i: tok for tok, i in t_vocab.items()}
    ids = sorted(set(s_by_id) | set(t_by_id))
    diffs = [
        f"id {i}: student {s_by_id.get(i)!r}, teacher {t_by_id.get(i)!r}"
        for i in ids
        if s_by_id.get(i) != t_by_id.get(i)
    ]
    raise ValueError(
        f"teacher and student tokenizers differ ({len(s_vocab)} vs {len(t_vocab)} tokens, "
        f"{len(diffs)} ids differ; first: {'; '.join(diffs[:limit])}): distillation needs a "
        "shared vocabulary"
    )
