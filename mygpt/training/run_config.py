"""RunConfig: one frozen value for a whole v1 run, made of typed parts.

Each setting's default, check and help text is declared once, on its field (`settings.setting`);
v1's flags are derived from those fields (`cli.add_settings`). What depends on the run itself,
fine-tuning's defaults and the shape of --init-from's weights, is applied by `resolve`, which
returns a new RunConfig. Checkpoints store `to_dict()`, plain types only.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mygpt.config import GPTConfig
from mygpt.data.corpus import IN_MEMORY_LIMIT
from mygpt.devices import DeviceSettings
from mygpt.errors import UserError
from mygpt.io.load import MODEL, DownloadSettings
from mygpt.lora import LORA, LoRASettings
from mygpt.settings import (
    as_paths,
    flag_fields,
    flag_of,
    require,
    require_non_negative,
    require_positive,
    setting,
)
from mygpt.tokenizer import ASSETS
from mygpt.training.trainer import (
    FINE_TUNING_LR,
    FROM_SCRATCH_LR,
    LORA_LR,
    REPORTS,
    TrainSettings,
)

DATA = "data"  # a group of v1's --help
TEXT_TRAIN_RATIO, INSTRUCTION_TRAIN_RATIO = 0.9, 0.85
DEFAULT_DATA = ASSETS / "the-verdict.txt"  # inside the package: an installed wheel trains too
# The book's run from scratch: GPT-2 124M's shape at context 256, dropout 0.1, no qkv bias.
FROM_SCRATCH = GPTConfig(context_length=256)
FINE_TUNING_DROP_RATE = 0.0  # the book's chapter 5 fine-tuning setting
# The model's shape: what --resume may not change, and what --init-from's weights decide.
SHAPE = ("context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias")


@dataclass(frozen=True)
class DataSettings:
    """The text to train on or score, and how it is cut into windows."""

    data: Path = setting(
        DEFAULT_DATA,
        "a UTF-8 text file; a Parquet, JSON Lines (.jsonl, .jsonl.gz) or JSON file of "
        "documents; or a folder of them (recursive)",
        group=DATA,
    )
    text_field: str = setting(
        "text",
        "the Parquet column or JSON field that holds the text",
        group=DATA,
        metavar="NAME",
    )
    # None: TEXT_TRAIN_RATIO, or INSTRUCTION_TRAIN_RATIO for instruction data (the book's).
    train_ratio: float | None = setting(
        None,
        "share for training: of the characters, or of the tokens of a token file, or of "
        f"instruction records (default: {TEXT_TRAIN_RATIO}; {INSTRUCTION_TRAIN_RATIO} of "
        "instruction records, the rest 10%% test, 5%% validation, as the book's chapter 7)",
        group=DATA,
    )
    memmap: bool = setting(
        False,
        "tokenize into a uint16 file beside the data and memory-map it "
        f"(automatic above {IN_MEMORY_LIMIT // 2**20} MB)",
        group=DATA,
    )
    stride: int | None = setting(
        None, "step between windows (default: the context length)", group=DATA, positive=True
    )
    tokenizer: str | None = setting(
        None,
        "gpt2 (GPT-2's BPE), char, or a folder of `mygpt tokenizer train`; the model's "
        "vocab_size follows it (default: gpt2; with --init-from or --resume: the model's)",
        group=DATA,
        metavar="NAME|DIR",
    )
    mask_prompt: bool = setting(
        False,
        "instruction data: learn only the responses (the prompt's targets are -100, the "
        "book's exercise 7.2); off, as in the book's chapter 7: the loss covers the prompt too",
        group=DATA,
    )
    max_length: int | None = setting(
        None,
        "instruction data: cut each record to N tokens (default: the model's context)",
        group=DATA,
        positive=True,
    )

    def __post_init__(self) -> None:
        as_paths(self, "data")
        r = self.train_ratio
        require(r is None or 0.0 < r < 1.0, "train_ratio", "must be between 0 and 1")
        require_positive(self, "stride", "max_length")

    def share(self, instructions: bool) -> float:
        """The training share of this data."""
        default = INSTRUCTION_TRAIN_RATIO if instructions else TEXT_TRAIN_RATIO
        return default if self.train_ratio is None else self.train_ratio


@dataclass(frozen=True)
class ModelSettings:
    """A new model's shape, or the weights to start from; None: decided by `resolve`."""

    init_from: str | None = setting(
        None,
        "start from these weights: a GPT-2 size (124M, 355M, 774M, 1558M), a checkpoint "
        "folder (OpenAI's or the hub's layout), or a v1 model.safetensors / checkpoint.pt",
        group=MODEL,
        metavar="SOURCE",
    )
    context_length: int | None = setting(
        None,
        f"tokens per window and the model's context (default: {FROM_SCRATCH.context_length})",
        group=MODEL,
        positive=True,
    )
    emb_dim: int | None = setting(
        None, f"embedding width (default: {FROM_SCRATCH.emb_dim})", group=MODEL, positive=True
    )
    n_layers: int | None = setting(
        None, f"transformer blocks (default: {FROM_SCRATCH.n_layers})", group=MODEL, positive=True
    )
    n_heads: int | None = setting(
        None, f"attention heads (default: {FROM_SCRATCH.n_heads})", group=MODEL, positive=True
    )
    drop_rate: float | None = setting(
        None,
        f"dropout (default: {FROM_SCRATCH.drop_rate}; {FINE_TUNING_DROP_RATE} with --init-from)",
        group=MODEL,
    )
    qkv_bias: bool | None = setting(
        None, "biases on the query, key and value projections", group=MODEL
    )

    def __post_init__(self) -> None:
        # Checked once whole (GPTConfig's checks, in the flags' names): a shape given in part
        # is completed by `resolve`, which makes a new ModelSettings and so comes here again.
        shape = {name: getattr(self, name) for name in (*SHAPE, "drop_rate")}
        if None in shape.values():
            return
        try:
            GPTConfig(**shape)
        except ValueError as e:
            names = "|".join(shape)
            raise UserError(re.sub(rf"\b({names})\b", lambda m: flag_of(m[1]), str(e))) from None


@dataclass(frozen=True)
class ReportSettings:
    """The samples printed while training."""

    start_context: str = setting(
        "Every effort moves you", "sample prompt", group=REPORTS, metavar="TEXT"
    )
    sample_tokens: int = setting(50, "tokens/sample", group=REPORTS, positive=True)
    sample_every: int = setting(0, "also sample every N steps (0: epochs only)", group=REPORTS)
    eval_task: str | None = setting(
        None,
        "also score a benchmark at evaluations: hellaswag's acc_norm (mygpt eval's), in the "
        "progress lines, the checkpoint and the loss plot",
        group=REPORTS,
        choices=("hellaswag",),
    )
    eval_task_every: int = setting(
        250, "score --eval-task every N steps (a multiple of --eval-freq)", group=REPORTS
    )
    eval_task_limit: int | None = setting(
        None, "score its first N items only (default: all)", group=REPORTS
    )
    eval_task_data: Path | None = setting(
        None,
        "a local copy of its file (default: downloaded once, as mygpt eval does)",
        group=REPORTS,
    )

    def __post_init__(self) -> None:
        as_paths(self, "eval_task_data")
        require_positive(self, "sample_tokens", "eval_task_every")
        if self.eval_task_limit is not None:
            require_positive(self, "eval_task_limit")
        require_non_negative(self, "sample_every")
        require(self.start_context != "", "start_context", "must not be empty: samples continue it")


@dataclass(frozen=True)
class OutputSettings:
    """Where the run's files go, how often it checkpoints, and what it continues from."""

    output_dir: Path = setting(
        Path("."), "where loss-plot.png, model.safetensors, checkpoint.pt go", group=REPORTS
    )
    save_every: int = setting(0, "checkpoint every N steps and at the end", group=REPORTS)
    resume: Path | None = setting(
        None, "continue from this checkpoint.pt, its flags the defaults", group=REPORTS
    )

    def __post_init__(self) -> None:
        as_paths(self, "output_dir", "resume")
        require_non_negative(self, "save_every")


@dataclass(frozen=True)
class RunConfig:
    """A whole v1 run. Parts: data, model, download, train, report, outputs, device, lora."""

    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    download: DownloadSettings = DownloadSettings()
    train: TrainSettings = TrainSettings()
    report: ReportSettings = ReportSettings()
    outputs: OutputSettings = OutputSettings()
    device: DeviceSettings = DeviceSettings()
    lora: LoRASettings = LoRASettings()
    eval_only: bool = setting(False, "print the loss on all of --data; no training", group=REPORTS)
    no_memory_check: bool = setting(
        False,
        "train even if the estimated memory exceeds what the device has free",
        group=REPORTS,
    )

    @property
    def is_fine_tuning(self) -> bool:
        return self.model.init_from is not None

    def resolve(self, weights: GPTConfig | None = None) -> RunConfig:
        """A copy with every None decided: from scratch, the book's shape and rates; with
        --init-from, the shape of `weights` (flags that contradict it are a UserError) and
        fine-tuning's learning rate and dropout. Needs `weights` only with --init-from."""
        m = self.model
        if self.is_fine_tuning and weights is None:
            raise ValueError("resolve: --init-from's weights decide the shape; pass their config")
        base = weights if self.is_fine_tuning else FROM_SCRATCH
        if self.is_fine_tuning:
            check_shape(m, base)
        shape = {k: getattr(base, k) if getattr(m, k) is None else getattr(m, k) for k in SHAPE}
        drop = FINE_TUNING_DROP_RATE if self.is_fine_tuning else FROM_SCRATCH.drop_rate
        lr = FINE_TUNING_LR if self.is_fine_tuning else FROM_SCRATCH_LR
        lr = LORA_LR if self.lora.enabled else lr
        return replace(
            self,
            model=replace(m, **shape, drop_rate=drop if m.drop_rate is None else m.drop_rate),
            train=replace(self.train, lr=lr if self.train.lr is None else self.train.lr),
        )

    def gpt_config(self, vocab_size: int) -> GPTConfig:
        """The GPTConfig of a resolved run."""
        m = self.model
        return GPTConfig(
            vocab_size, m.context_length, m.emb_dim, m.n_heads, m.n_layers, m.drop_rate, m.qkv_bias
        )

    def with_flags(self, given: dict[str, Any]) -> RunConfig:
        """A copy with the flags given on a command line: {"train.lr": 1e-3, "eval_only": True}."""
        parts: dict[str, dict[str, Any]] = {}
        top = {}
        for key, value in given.items():
            part, _, name = key.rpartition(".")
            (parts.setdefault(part, {}) if part else top)[name] = value
        changes = {part: replace(getattr(self, part), **values) for part, values in parts.items()}
        return replace(self, **changes, **top)

    def to_dict(self) -> dict[str, Any]:
        """Plain types (paths as text): what a checkpoint stores, loadable with weights_only."""
        saved: dict[str, Any] = {}
        for prefix, cls in parts():
            part = getattr(self, prefix[:-1]) if prefix else self
            values = {f.name: _plain(getattr(part, f.name)) for f in flag_fields(cls)}
            saved |= {prefix[:-1]: values} if prefix else values
        return saved

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> RunConfig:
        """The inverse of `to_dict`; a saved value of a setting that no longer exists is dropped."""
        given = {}
        for key, value in saved.items():
            if isinstance(value, dict):
                given |= {f"{key}.{k}": v for k, v in value.items()}
            else:
                given[key] = value
        return cls().with_flags(_typed(given))

    @classmethod
    def from_flags(cls, flags: dict[str, Any]) -> RunConfig:
        """From the flat flag dict that checkpoints of MyGPT before RunConfig saved ("args")."""
        return cls().with_flags(
            _typed(
                {
                    key: flags[name]
                    for key, name in _flag_keys().items()
                    if name in flags and name != "resume"
                }
            )
        )


# What --eval-only reads of a run's flags; the rest of these parts only train.
_EVAL_IGNORES = (
    "data.train_ratio",
    "data.stride",
    "data.mask_prompt",
    "model.drop_rate",
    "train.",
    "report.",
    "outputs.",
    "lora.",
)
_EVAL_USES = (
    "train.batch_size",
    "train.seed",
    "outputs.resume",
    "lora.lora_adapter",
    "lora.base_dtype",
)


def refuse_ignored_flags(given: dict[str, Any], resumed: RunConfig | None) -> None:
    """A UserError for flags given where they would do nothing: with --eval-only the training
    flags, with --resume --init-from (the checkpoint holds the weights) and another --data
    (its position in the data would be reused on other data)."""
    flags = [key for key in given if key in _flag_keys()]
    if given.get("eval_only"):
        ignored = [k for k in flags if k.startswith(_EVAL_IGNORES) and k not in _EVAL_USES]
        if ignored:
            names = ", ".join(flag_of(_flag_keys()[k]) for k in ignored)
            raise UserError(f"--eval-only scores a model and trains nothing: {names} does nothing")
    if resumed is None:
        return
    if "model.init_from" in given:
        raise UserError("--resume continues the checkpoint's weights: --init-from does nothing")
    other = Path(given.get("data.data", resumed.data.data)).resolve() != resumed.data.data.resolve()
    if other and not given.get("eval_only"):  # scoring a checkpoint on other data is fine
        raise UserError(
            f"--resume continues on the data it was trained on, {resumed.data.data}, where it "
            f"stopped; --data {given['data.data']} is other data (start a run with --init-from)"
        )


def check_shape(model: ModelSettings, weights: GPTConfig) -> None:
    """The shape flags given with --init-from must agree with the weights' shape."""
    conflicts = [
        f"{flag_of(name)} {getattr(model, name)}, the weights have {getattr(weights, name)}"
        for name in SHAPE[1:]
        if getattr(model, name) is not None and getattr(model, name) != getattr(weights, name)
    ]
    if model.context_length and model.context_length > weights.context_length:
        conflicts.append(
            f"--context-length {model.context_length} is longer than the weights' "
            f"{weights.context_length} positions"
        )
    if conflicts:
        raise UserError(f"--init-from {model.init_from}: {'; '.join(conflicts)}")


def parts() -> list[tuple[str, type]]:
    """(prefix, settings class) of every part of a RunConfig, then RunConfig's own flags."""
    nested = [
        (f.name + ".", type(f.default))
        for f in dataclasses.fields(RunConfig)
        if "flag" not in f.metadata
    ]
    return [*nested, ("", RunConfig)]


# v1's --help: its groups in order, with a line under a group's title where one helps.
GROUPS = {
    DATA: None,
    MODEL: "Shape flags default to GPT-2 124M at context 256, or to the --init-from weights.",
    "training": None,
    REPORTS: None,
    "device and precision": None,
    LORA: "Frozen weights in bfloat16 and activation checkpointing fit GPT-2 1558M in 12 GB.",
}


def _flag_keys() -> dict[str, str]:
    """ "train.lr" -> "lr" for every flag of a run: flag names are unique across the parts."""
    return {prefix + f.name: f.name for prefix, cls in parts() for f in flag_fields(cls)}


def _path_keys() -> set[str]:
    return {
        prefix + f.name
        for prefix, cls in parts()
        for f in flag_fields(cls)
        if "Path" in str(f.type)
    }


def _typed(given: dict[str, Any]) -> dict[str, Any]:
    """Saved plain values as the settings' types: paths from text, lists as tuples; keys of
    settings that do not exist (any more) are dropped."""
    keys, paths = _flag_keys(), _path_keys()
    out = {}
    for key, value in given.items():
        if key not in keys:
            continue
        out[key] = Path(value) if key in paths and value is not None else value
    return out


def _plain(value: Any) -> Any:
    return (
        str(value)
        if isinstance(value, Path)
        else list(value)
        if isinstance(value, tuple)
        else value
    )
