"""LoRA after the book's appendix E: frozen Linear layers plus trainable low-rank updates.

`apply_lora` freezes a GPTModel (its Linear matrices optionally stored in bfloat16) and wraps
the chosen Linear layers in `LinearWithLoRA`: W x + (alpha / rank) B A x. `merged` folds the
updates back into a plain GPTModel; `save_adapter` writes the adapters alone, with what is
needed to apply them again to the same base weights (`read_adapter`, `load_adapter_state`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from mygpt.config import GPTConfig
from mygpt.errors import UserError
from mygpt.io.files import check_readable, write_atomically
from mygpt.io.model_files import model_from_state
from mygpt.model import GPTModel
from mygpt.settings import as_paths, require, setting

LORA = "LoRA: train low-rank adapters instead of the weights"  # the group of v1's --help
# --lora-targets names: where each Linear sits in a TransformerBlock.
TARGETS = {
    "query": "att.W_query",
    "key": "att.W_key",
    "value": "att.W_value",
    "out_proj": "att.out_proj",
    "ff_in": "ff.layers.0",
    "ff_out": "ff.layers.2",
}
BASE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SUGGESTED_RANK = 16  # the book's appendix E; what a refused full fine-tune is told to try
ADAPTER_FORMAT = "mygpt-lora-1"


@dataclass(frozen=True)
class LoRASettings:
    """v1's LoRA flags. Off unless --lora-rank (or --lora-adapter, which brings its own)."""

    lora_rank: int | None = setting(
        None,
        "train rank-N adapters on frozen weights instead of the weights (the book's "
        "appendix E); the base stays bit-identical, and model.safetensors gets base + update",
        group=LORA,
        positive=True,
    )
    lora_alpha: float | None = setting(
        None,
        "the update is scaled by alpha / rank (default: the rank, so a scale of 1: peft's "
        "default r=8, lora_alpha=8 and the book's rank=16, alpha=16 both are)",
        group=LORA,
    )
    lora_dropout: float = setting(0.0, "dropout on the adapters' input", group=LORA)
    lora_targets: str = setting(
        ",".join(TARGETS),
        "comma-separated Linear layers of every block to adapt: query, key, value, out_proj "
        "(attention), ff_in, ff_out (feed-forward)",
        group=LORA,
        metavar="NAMES",
    )
    lora_adapter: Path | None = setting(
        None,
        "start from this adapter.safetensors (its rank, alpha and targets) on --init-from's "
        "weights, which must be the ones it was trained on",
        group=LORA,
        metavar="FILE",
    )
    base_dtype: str = setting(
        "float32",
        "storage of the frozen weights: bfloat16 halves them (the Linear matrices, 95%% of "
        "GPT-2 1558M; embeddings, norms and biases stay float32), computed in float32 unless "
        "--dtype says otherwise; float32 is exact",
        group=LORA,
        choices=tuple(BASE_DTYPES),
    )

    def __post_init__(self) -> None:
        as_paths(self, "lora_adapter")
        unknown = [name for name in self.targets if name not in TARGETS]
        require(
            not unknown and bool(self.targets),
            "lora_targets",
            f"{self.lora_targets!r}: choose from {', '.join(TARGETS)}",
        )
        require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")
        require(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha", "must be positive")
        if not self.enabled:  # a LoRA setting given without LoRA is a mistake, not a no-op
            for f in dataclasses.fields(self):
                given = getattr(self, f.name) != f.default
                require(not given, f.name, "applies to LoRA: add --lora-rank N")

    @property
    def enabled(self) -> bool:
        return self.lora_rank is not None or self.lora_adapter is not None

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.lora_targets.split(",") if name.strip())

    @property
    def alpha(self) -> float:
        return float(self.lora_rank if self.lora_alpha is None else self.lora_alpha)

    @property
    def dtype(self) -> torch.dtype:
        return BASE_DTYPES[self.base_dtype]

    def with_adapter(self, adapter: AdapterInfo) -> LoRASettings:
        """These settings with --lora-adapter's rank, alpha and targets (flags must agree)."""
        given = {
            "lora_rank": (self.lora_rank, adapter.rank),
            "lora_alpha": (self.lora_alpha, adapter.alpha),
        }
        conflicts = [
            f"--{k.replace('_', '-')} {mine:g}, the adapter's is {theirs:g}"
            for k, (mine, theirs) in given.items()
            if mine is not None and mine != theirs
        ]
        if conflicts:
            raise UserError(f"--lora-adapter {self.lora_adapter}: {'; '.join(conflicts)}")
        return replace(
            self,
            lora_rank=adapter.rank,
            lora_alpha=adapter.alpha,
            lora_targets=",".join(adapter.targets),
        )


# --- The layers ---------------------------------------------------------------------------


class LoRALayer(nn.Module):
    """The update (alpha / rank) B A x. A (rank, in_dim) is Kaiming-uniform as in nn.Linear
    and peft, B (out_dim, rank) is zero: training starts from the base model exactly."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.rank, self.alpha = rank, alpha
        self.A = nn.Parameter(torch.empty(rank, in_dim))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # U(+-1/sqrt(in_dim))
        self.B = nn.Parameter(torch.zeros(out_dim, rank))
        self.dropout = nn.Dropout(dropout)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(self.dropout(x), self.A), self.B) * self.scaling  # (.., out_dim)

    def delta(self) -> Tensor:
        """The update as a matrix (out_dim, in_dim), to add to the frozen weight."""
        return (self.B @ self.A) * self.scaling


class FrozenLinear(nn.Module):
    """A Linear layer that does not train, its weight stored in any dtype (float32, bfloat16)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.linear.weight, self.linear.bias
        if w.dtype == x.dtype or torch.is_autocast_enabled(x.device.type):
            return F.linear(x, w, b)
        return _WideLinear.apply(x, w, b)


class LinearWithLoRA(FrozenLinear):
    """The book's LinearWithLoRA: W x + (alpha / rank) B A x, only A and B trainable."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__(linear)
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.lora(x)


class _WideLinear(torch.autograd.Function):
    """x W^T + b with W in a narrower dtype than x, widened for the product. Autograd keeps
    the narrow W for the backward pass (widened again there), never a float32 copy of it."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(weight)
        return F.linear(x, weight.to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        return grad @ weight.to(grad.dtype), None, None  # frozen: no gradient for W or b


# --- A model's adapters -------------------------------------------------------------------


def check_rank(cfg: GPTConfig, rank: int) -> None:
    """A rank of at least 1 and at most the narrower side of every target (emb_dim)."""
    if not 1 <= rank <= cfg.emb_dim:
        raise UserError(
            f"--lora-rank {rank}: must be between 1 and the layers' width {cfg.emb_dim}"
        )


def apply_lora(model: GPTModel, settings: LoRASettings) -> GPTModel:
    """Freeze `model` and give each target Linear of every block an adapter, in place.

    With base_dtype bfloat16 every frozen Linear matrix is stored in it (a tied output head
    is the token embedding, which stays float32).
    """
    check_rank(model.cfg, settings.lora_rank)
    model.requires_grad_(False)
    wrapped = {TARGETS[name] for name in settings.targets}
    for block in model.trf_blocks:
        for path in TARGETS.values():
            parent, name = _parent(block, path)
            linear = getattr(parent, name)
            if path in wrapped:
                layer = LinearWithLoRA(
                    linear, settings.lora_rank, settings.alpha, settings.lora_dropout
                )
            elif settings.dtype != torch.float32:
                layer = FrozenLinear(linear)
            else:
                continue
            _store_weight(layer.linear, settings.dtype)
            setattr(parent, name, layer)
    if settings.dtype != torch.float32 and not model.is_tied:
        model.out_head = FrozenLinear(_store_weight(model.out_head, settings.dtype))
    return model


def _store_weight(linear: nn.Linear, dtype: torch.dtype) -> nn.Linear:
    """The frozen matrix in `dtype` (its bias, if any, stays float32)."""
    if linear.weight.dtype != dtype:
        linear.weight = nn.Parameter(linear.weight.detach().to(dtype), requires_grad=False)
    return linear


def _parent(block: nn.Module, path: str) -> tuple[nn.Module, str]:
    *parents, name = path.split(".")
    for part in parents:
        block = getattr(block, part)
    return block, name


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALayer) for m in model.modules())


def lora_layers(model: nn.Module) -> dict[str, LoRALayer]:
    """The adapters by the name of the Linear they adapt: "trf_blocks.0.att.W_query"."""
    return {
        name.removesuffix(".lora"): m
        for name, m in model.named_modules()
        if isinstance(m, LoRALayer)
    }


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """The adapters' tensors: "trf_blocks.0.att.W_query.lora.A", ..."""
    return {k: v for k, v in model.state_dict().items() if ".lora." in k}


def load_adapter_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Put saved adapter tensors into a model with the same adapters (shapes and names)."""
    expected = adapter_state(model)
    if set(state) != set(expected) or any(state[k].shape != v.shape for k, v in expected.items()):
        raise UserError("the saved adapters do not fit this model's (rank, targets or shape)")
    model.load_state_dict(state, strict=False)


def base_state(model: nn.Module) -> dict[str, Tensor]:
    """The frozen weights under GPTModel's own names (no adapters; a tied head once)."""
    state = {
        k.replace(".linear.", "."): v for k, v in model.state_dict().items() if ".lora." not in k
    }
    if isinstance(model.out_head, nn.Linear) and model.is_tied:  # (a FrozenLinear is not)
        del state["out_head.weight"]
    return state


def merged(model: GPTModel) -> GPTModel:
    """A plain float32 GPTModel with each update folded in: W + (alpha / rank) B A."""
    state = {k: v.detach().float() for k, v in base_state(model).items()}
    with torch.no_grad():
        for name, lora in lora_layers(model).items():
            state[f"{name}.weight"] = state[f"{name}.weight"] + lora.delta().float()
    return model_from_state(model.cfg, state).train(model.training)


def fingerprint(model: GPTModel) -> str:
    """SHA-256 of the base weights (names, shapes, values rounded to bfloat16): the same for a
    base held in float32 or in bfloat16, so an adapter knows its base under either."""
    digest = hashlib.sha256()
    for name, tensor in sorted(base_state(model).items()):
        values = tensor.detach().cpu().to(torch.bfloat16).contiguous().view(torch.int16)
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(values.numpy())
    return digest.hexdigest()[:32]


def n_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_summary(model: GPTModel) -> str:
    """`LoRA rank 16, alpha 16 on query, value: trainable 589,824 of 125,029,632 (0.47%)`."""
    layers = lora_layers(model)
    first = next(iter(layers.values()))
    targets = [t for t, path in TARGETS.items() if any(n.endswith(path) for n in layers)]
    total, trained = model.num_parameters(), n_trainable(model)
    return (
        f"LoRA rank {first.rank}, alpha {first.alpha:g} on {', '.join(targets)}: "
        f"trainable {trained:,} of {total:,} ({100 * trained / total:.2f}%)"
    )


# --- adapter.safetensors ------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter file records beside its tensors, and a LoRA checkpoint beside them."""

    rank: int
    alpha: float
    targets: tuple[str, ...]
    base: str  # where the base weights came from: --init-from's source
    fingerprint: str  # of the base weights before a shorter --context-length cut them
    config: GPTConfig  # the base's shape

    @classmethod
    def of(cls, settings: LoRASettings, base: str, fingerprint: str, cfg: GPTConfig):
        return cls(settings.lora_rank, settings.alpha, settings.targets, base, fingerprint, cfg)

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets), "config": asdict(self.config)}

    @classmethod
    def from_dict(cls, saved: dict) -> AdapterInfo:
        return cls(
            **{
                **saved,
                "targets": tuple(saved["targets"]),
                "config": GPTConfig.from_dict(saved["config"]),
            }
        )


def save_adapter(model: GPTModel, info: AdapterInfo, path: str | Path) -> Path:
    """adapter.safetensors: the adapters' tensors, and `info` as metadata."""
    state = {k: v.detach().contiguous().cpu() for k, v in adapter_state(model).items()}
    metadata = {"format": ADAPTER_FORMAT, "lora": json.dumps(info.to_dict())}
    return write_atomically(Path(path), lambda tmp: save_file(state, tmp, metadata=metadata))


def read_adapter(path: str | Path) -> tuple[AdapterInfo, dict[str, Tensor]]:
    """An adapter file's record and tensors; a file that is not one is a UserError."""
    check_readable(path)
    if not Path(path).is_file():
        raise UserError(f"--lora-adapter {path}: no such file")
    try:
        with safe_open(str(path), framework="pt", backend="pread") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != ADAPTER_FORMAT:
                raise UserError(f"--lora-adapter {path}: not an adapter.safetensors of MyGPT")
            info = AdapterInfo.from_dict(json.loads(metadata["lora"]))
            return info, {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"--lora-adapter {path}: not an adapter.safetensors of MyGPT, or damaged "
            f"({str(e)[:100]})"
        ) from None


def check_base(info: AdapterInfo, base_fingerprint: str, source: str, what: str) -> None:
    """The weights loaded as the base are the ones the adapters were trained on."""
    if info.fingerprint != base_fingerprint:
        raise UserError(
            f"{what} was trained on other base weights ({info.base}, fingerprint "
            f"{info.fingerprint}) than --init-from {source} (fingerprint {base_fingerprint})"
        )
