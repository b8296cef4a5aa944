"""Model configuration: the GPTConfig dataclass and the four GPT-2 sizes."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT model; field names follow Raschka's *Build a Large Language Model*."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.emb_dim % self.n_heads:
            raise ValueError(f"emb_dim {self.emb_dim} must be divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")

    @classmethod
    def from_dict(cls, values: object) -> GPTConfig:
        """A GPTConfig from a file's JSON-like dict, every field given with its exact type
        (an int is not a bool, a float or text); a ValueError says which one is wrong."""
        if not isinstance(values, dict):
            raise ValueError(f"the model config is {type(values).__name__}, not an object")
        names = [f.name for f in fields(cls)]
        if missing := [n for n in names if n not in values]:
            raise ValueError(f"the model config has no {', '.join(missing)}")
        if extra := sorted(set(values) - set(names)):
            raise ValueError(f"the model config has unknown fields: {', '.join(map(str, extra))}")
        for name in names:
            kind, value = _FIELD_TYPES[name], values[name]
            if type(value) not in kind:  # bool is an int to isinstance
                raise ValueError(f"the model config's {name} is {value!r}, not {kind[0].__name__}")
        return cls(**values)

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads


_FIELD_TYPES = {f.name: (int,) for f in fields(GPTConfig)} | {
    "drop_rate": (float, int),
    "qkv_bias": (bool,),
}

# (emb_dim, n_layers, n_heads) of the models OpenAI released.
GPT2_SIZES: dict[str, tuple[int, int, int]] = {
    "124M": (768, 12, 12),
    "355M": (1024, 24, 16),
    "774M": (1280, 36, 20),
    "1558M": (1600, 48, 25),
}


def gpt2_config(size: str = "124M", **overrides) -> GPTConfig:
    """The GPTConfig of an OpenAI GPT-2 size ("124M", "355M", "774M", "1558M")."""
    if size not in GPT2_SIZES:
        raise ValueError(f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_SIZES)}")
    emb_dim, n_layers, n_heads = GPT2_SIZES[size]
    base = GPTConfig(emb_dim=emb_dim, n_layers=n_layers, n_heads=n_heads)
    return replace(base, **overrides)
