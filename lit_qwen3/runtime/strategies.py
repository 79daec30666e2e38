"""Lightning's own engines for Hugging Face models, chosen in YAML (``configs/strategies/``).

- DDP: ``lightning.pytorch.strategies.DDPStrategy`` as it is.
- FSDP2: :class:`FSDP2Strategy`, Lightning's ``ModelParallelStrategy`` whose sharding plan the
  stage applies in ``configure_model`` (``fully_shard`` per decoder layer, then the root), with
  the plan's options in the strategy's arguments: mixed precision (``MixedPrecisionPolicy``),
  CPU offload (``CPUOffloadPolicy``), resharding after forward, and whether frozen models
  (reference, teacher, reward model) are sharded like the policy or replicated.
- FSDP (FSDP1, GPU): :class:`DecoderFSDPStrategy`, Lightning's ``FSDPStrategy`` wrapping each
  decoder layer (the policy is found from the model itself, so any HF model works).
- DeepSpeed ZeRO-2/3 (GPU): ``lightning.pytorch.strategies.DeepSpeedStrategy`` as it is; the
  helpers below make Hugging Face loading, frozen models and the export work under ZeRO-3.

DeepSpeed is an optional extra (``pip install 'lit-qwen3[gpu]'``), imported only when used;
:func:`check_strategy_requirements` turns its absence into an error naming the config key.
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from typing import Any, Literal

import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from lit_qwen3.models import resolve_dtype

__all__ = [
    "DecoderFSDPStrategy",
    "FSDP2Strategy",
    "check_strategy_requirements",
    "deepspeed_stage",
    "fsdp2_options",
    "frozen_zero3",
    "hf_zero3_config",
    "is_decoder_layer",
    "is_zero3_partitioned",
]


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 (``fully_shard``) over all devices, the plan applied by the stage module.

    Args:
        data_parallel_size: devices that shard the model; ``auto``: all of them (every node's),
            divided by ``tensor_parallel_size``.
        tensor_parallel_size: 1 (no tensor parallelism: the stages shard, they do not split
            layers).
        mixed_precision: ``bfloat16`` or ``float16``: parameters are all-gathered and computed
            in that dtype while the sharded master weights stay in their own (float32) dtype;
            None keeps the parameters' dtype (use ``trainer.precision: bf16-true`` with bf16
            weights instead).
        reduce_dtype: dtype of the gradient reduce-scatter under ``mixed_precision``.
        cpu_offload: keep sharded parameters, gradients and optimizer state in CPU memory
            (``CPUOffloadPolicy``); the optimizer step then runs on the CPU.
        reshard_after_forward: free gathered weights after each layer's forward (re-gathered
            in backward): less memory, more communication.
        frozen_models: ``shard`` frozen models (reference, teacher) like the policy, or
            ``replicate`` a full copy on every device (faster, more memory).
        save_distributed_checkpoint: one checkpoint shard per rank (a directory); False
            gathers a single file on rank 0.
    """

    def __init__(
        self,
        data_parallel_size: int | Literal["auto"] = "auto",
        tensor_parallel_size: int = 1,
        mixed_precision: Literal["bfloat16", "float16"] | None = None,
        reduce_dtype: Literal["float32", "bfloat16"] = "float32",
        cpu_offload: bool = False,
        reshard_after_forward: bool = True,
        frozen_models: Literal["shard", "replicate"] = "shard",
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        if frozen_models not in ("shard", "replicate"):
            raise ValueError(f"frozen_models must be 'shard' or 'replicate', got {frozen_models!r}")
        for name, value in (("mixed_precision", mixed_precision), ("reduce_dtype", reduce_dtype)):
            if value is not None:
                try:
                    resolve_dtype(value)
                except ValueError as error:
                    raise ValueError(f"FSDP2Strategy.{name}: {error}") from None
        super().__init__(
            data_parallel_size=data_parallel_size,
            tensor_parallel_size=tensor_parallel_size,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        self.mixed_precision = mixed_precision
        self.reduce_dtype = reduce_dtype
        self.cpu_offload = cpu_offload
        self.reshard_after_forward = reshard_after_forward
        self.frozen_models = frozen_models

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":  # Lightning's "auto" means the number of nodes
            tp = 1 if self._tensor_parallel_size == "auto" else self._tensor_parallel_size
            self._data_parallel_size = max(1, self.num_nodes * self.num_processes // tp)
        super().setup_environment()

    def fully_shard_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every ``fully_shard`` call of the plan."""
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

        kwargs: dict[str, Any] = {"reshard_after_forward": self.reshard_after_forward}
        if self.mixed_precision is not None:
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=resolve_dtype(self.mixed_precision),
                reduce_dtype=resolve_dtype(self.reduce_dtype),
            )
        if self.cpu_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy()
        return kwargs

    def model_to_device(self) -> None:
        if not self.cpu_offload:
            return super().model_to_device()
        # Offloaded shards stay in CPU memory (FSDP2 moves gathered weights to the device);
        # buffers (rotary tables...) are not sharded and go to the device.
        for module in self.model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = buffer.to(self.root_device)


def fsdp2_options(strategy: Any) -> tuple[dict[str, Any], bool]:
    """(``fully_shard`` kwargs, shard frozen models?) of a strategy: the defaults of plain
    ``ModelParallelStrategy`` (no mixed precision, no offload, frozen models sharded)."""
    if isinstance(strategy, FSDP2Strategy):
        return strategy.fully_shard_kwargs(), strategy.frozen_models == "shard"
    return {}, True


def is_decoder_layer(module: torch.nn.Module) -> bool:
    """A repeated block of a Hugging Face model (``Qwen3DecoderLayer``, ``LlamaDecoderLayer``...)."""
    return type(module).__name__.endswith(("DecoderLayer", "Block"))


def _decoder_layer_policy(module: torch.nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP1 auto-wrap policy (a lambda policy's signature): one unit per decoder layer."""
    return True if recurse else is_decoder_layer(module)


class DecoderFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` (FSDP1, CUDA) with one FSDP unit per decoder layer.

    Every argument of ``FSDPStrategy`` applies (``cpu_offload``, ``sharding_strategy``,
    ``state_dict_type: sharded`` for per-rank checkpoints...); mixed precision comes from
    ``trainer.precision`` (``bf16-mixed``, ``bf16-true``). Activation checkpointing: set
    ``checkpoint_decoder_layers`` (FSDP's checkpoint wrapper per layer) or the stage's
    ``gradient_checkpointing`` (Hugging Face's), not both.
    """

    def __init__(
        self,
        sharding_strategy: Literal[
            "FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"
        ] = "FULL_SHARD",
        state_dict_type: Literal["full", "sharded"] = "sharded",
        cpu_offload: bool = False,
        checkpoint_decoder_layers: bool = False,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(
            sharding_strategy=sharding_strategy,
            state_dict_type=state_dict_type,
            cpu_offload=cpu_offload,
            auto_wrap_policy=_decoder_layer_policy,
            activation_checkpointing_policy=(
                _decoder_layer_policy if checkpoint_decoder_layers else None
            ),
            process_group_backend=process_group_backend,
            timeout=timeout,
        )


def deepspeed_stage(strategy: Any) -> int | None:
    """The ZeRO stage of a ``DeepSpeedStrategy``; None for other strategies."""
    if type(strategy).__name__ != "DeepSpeedStrategy" and not any(
        cls.__name__ == "DeepSpeedStrategy" for cls in type(strategy).__mro__
    ):
        return None
    config = getattr(strategy, "config", None) or {}
    return int(config.get("zero_optimization", {}).get("stage", 0))


#: strategy class names and what they need beyond the core dependencies
_NEEDS = {
    "DeepSpeedStrategy": ("deepspeed", "DeepSpeed (CUDA only): pip install 'lit-qwen3[gpu]'"),
}


def check_strategy_requirements(strategy: Any, where: str = "trainer.strategy") -> None:
    """Raise a clear error when a configured strategy needs a package that is not installed.

    ``strategy`` is a class path, a ``{class_path: ...}`` mapping or a strategy object.
    """
    if isinstance(strategy, dict):
        strategy = strategy.get("class_path", "")
    name = strategy if isinstance(strategy, str) else type(strategy).__name__
    for class_name, (package, hint) in _NEEDS.items():
        if str(name).rsplit(".", 1)[-1] == class_name and importlib.util.find_spec(package) is None:
            raise ImportError(
                f"{where} is {name} but the {package!r} package is not installed. Install {hint}"
            )


# ----------------------------------------------------------------------------- DeepSpeed ZeRO-3
def hf_zero3_config(strategy: Any) -> Any:
    """Under ZeRO-3, a ``HfDeepSpeedConfig`` to keep alive while models load.

    Lightning builds the model inside ``deepspeed.zero.Init`` (weights partitioned at
    construction); transformers' ``from_pretrained`` then has to load each weight into its
    partitions, which it does only while a ``HfDeepSpeedConfig`` object of a stage-3 config
    exists. None for other strategies.
    """
    if deepspeed_stage(strategy) != 3:
        return None
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(strategy.config)


def frozen_zero3(model: torch.nn.Module, strategy: Any) -> torch.nn.Module:
    """A frozen model (built under ZeRO-3, so partitioned) in an inference-only DeepSpeed
    engine: its hooks gather each layer's weights for the forward; no optimizer, no state.

    Returns the model itself (the engine's ``module``); the engine stays referenced by it.
    """
    import deepspeed

    keep = ("bf16", "fp16", "zero_optimization", "train_micro_batch_size_per_gpu")
    config = {k: v for k, v in strategy.config.items() if k in keep}
    zero = dict(config.get("zero_optimization", {}))
    zero.pop("offload_optimizer", None)  # nothing to optimise
    config["zero_optimization"] = zero
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    object.__setattr__(model, "_deepspeed_engine", engine)
    return model


def is_zero3_partitioned(model: torch.nn.Module) -> bool:
    """Whether the weights are ZeRO-3 partitions (each rank holds a slice)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())
