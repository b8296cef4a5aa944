"""The model a run starts from: a checkpoint's (--resume), loaded weights (--init-from) or a
new one, with LoRA adapters where asked, and the config resolved against its shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import tiktoken
import torch

from mygpt.config import GPTConfig
from mygpt.errors import UserError
from mygpt.io.checkpoint import Checkpoint
from mygpt.io.load import load_model, reshaped, source_config, source_tokenizer
from mygpt.io.model_files import model_from_state
from mygpt.lora import (
    AdapterInfo,
    apply_lora,
    check_base,
    fingerprint,
    load_adapter_state,
    read_adapter,
)
from mygpt.model import GPTModel
from mygpt.settings import flag_of
from mygpt.tokenizer import (
    check_same_tokenizer,
    get_tokenizer,
    load_tokenizer,
    tokenizer_from_text,
)
from mygpt.training.distributed import Dist
from mygpt.training.run_config import SHAPE, RunConfig


@dataclass
class StartedModel:
    """The model a run trains or scores, where its weights came from (None: a new model),
    the config resolved against them, and with LoRA what its adapter file will record."""

    model: GPTModel
    origin: str | None
    config: RunConfig
    adapter: AdapterInfo | None = None


Checks = Callable[[RunConfig, GPTConfig, bool], None]


def run_tokenizer(requested: RunConfig, checkpoint: Checkpoint | None) -> tiktoken.Encoding:
    """The run's tokenizer: the checkpoint's (--resume), the weights' (--init-from), else
    --tokenizer's (GPT-2's by default); a --tokenizer that contradicts the model is refused."""
    asked = requested.data.tokenizer
    saved_run = checkpoint.run if checkpoint is not None else None
    if saved_run is not None and asked == saved_run.get("data", {}).get("tokenizer"):
        asked = None  # the saved run's own flag: its folder may be gone, its copy is kept
    wanted = load_tokenizer(asked) if asked else None
    if checkpoint is not None:
        own, where = tokenizer_from_text(checkpoint.tokenizer), "--resume's checkpoint"
    elif requested.model.init_from is not None:
        source = requested.model.init_from
        own, where = source_tokenizer(source), f"--init-from {source}"
    else:
        return wanted or get_tokenizer()
    check_same_tokenizer(own, wanted, where)
    return own


def start_model(
    requested: RunConfig,
    checkpoint: Checkpoint | None,
    dist: Dist,
    device,
    log: Callable,
    checks: Checks | None = None,
    n_vocab: int | None = None,
) -> StartedModel:
    """The model to train or score: a checkpoint's (--resume), loaded weights (--init-from), or
    a new one, with LoRA adapters if asked (new, --lora-adapter's, or a LoRA checkpoint's).

    `checks(config, cfg, tied)` runs before a new model is built or weights are loaded (where
    their shape is known beforehand), and once they are. `n_vocab`: a new model's vocabulary
    (its tokenizer's; default GPT-2's).
    """
    checks = checks or (lambda config, cfg, tied: None)
    torch.manual_seed(requested.train.seed + dist.rank)  # rank 0 as one process; DDP copies it
    saved_lora = checkpoint.lora if checkpoint else None
    if checkpoint:
        saved = checkpoint.config
        check_resumed_shape(requested, saved)
    if checkpoint and saved_lora is None:
        config = requested.resolve(saved)
        model = model_from_state(replace(saved, drop_rate=config.model.drop_rate), checkpoint.model)
        checks(config, model.cfg, model.is_tied)
        return StartedModel(model.to(device), str(config.outputs.resume), config)
    adapter, tensors = None, None
    if requested.lora.lora_adapter and not checkpoint:
        adapter, tensors = read_adapter(requested.lora.lora_adapter)
    lora = requested.lora.with_adapter(adapter) if adapter else requested.lora
    model, origin, config, base = base_model(
        replace(requested, lora=lora), dist, device, log, checks, n_vocab
    )
    if not config.lora.enabled:
        return StartedModel(model, origin, config)
    # The adapters' initial values draw from a generator of their own: the global one, which
    # draws the data's shuffle next, is then where a full fine-tune's is (same seed, same batches).
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(config.train.seed)
        apply_lora(model, config.lora)
    model.to(device)
    source = config.model.init_from or f"a new model (--seed {config.train.seed})"
    if saved_lora is not None:  # --resume: the checkpoint's adapters
        resumed = f"--resume {config.outputs.resume}"
        check_base(saved_lora, base, source, resumed)
        load_adapter_state(model, checkpoint.model)
    elif adapter is not None:
        check_base(adapter, base, source, f"--lora-adapter {config.lora.lora_adapter}")
        load_adapter_state(model, tensors)
    info = AdapterInfo.of(config.lora, source, base, model.cfg)
    return StartedModel(model, origin, config, info)


def check_resumed_shape(config: RunConfig, saved: GPTConfig) -> None:
    """--resume may not change the model's shape."""
    m = config.model
    changed = [
        f"{flag_of(k)} {getattr(saved, k)}, not {getattr(m, k)}"
        for k in SHAPE
        if getattr(m, k) is not None and getattr(m, k) != getattr(saved, k)
    ]
    if changed:
        raise UserError(f"--resume: the checkpoint's model has {'; '.join(changed)}")


def base_model(
    requested: RunConfig,
    dist: Dist,
    device,
    log: Callable,
    checks: Checks,
    n_vocab: int | None = None,
) -> tuple[GPTModel, str | None, RunConfig, str | None]:
    """--init-from's weights (at the run's context and dropout) or a new model; where they came
    from; the config resolved against them; with LoRA, the fingerprint of the full weights."""
    lora = requested.lora
    if not requested.is_fine_tuning:
        config = requested.resolve()
        cfg = config.gpt_config(n_vocab or get_tokenizer().n_vocab)
        checks(config, cfg, False)
        model = GPTModel(cfg)
        return model.to(device), None, config, fingerprint(model) if lora.enabled else None
    source = requested.model.init_from
    if peeked := source_config(source):  # refuse a bad shape or size before loading
        expected, tied = peeked
        resolved = requested.resolve(expected)
        checks(resolved, replace(expected, context_length=resolved.model.context_length), tied)
    linear_dtype = lora.dtype if lora.enabled else torch.float32
    with dist.main_first():  # rank 0 downloads or converts first; the others then read it
        model = load_model(source, device, linear_dtype, download=requested.download, log=log)
    origin = model.origin
    base = fingerprint(model) if lora.enabled else None  # before a shorter context cuts it
    config = requested.resolve(model.cfg)
    model = reshaped(model, config.model.context_length, config.model.drop_rate)
    checks(config, model.cfg, model.is_tied)
    return model, origin, config, base
