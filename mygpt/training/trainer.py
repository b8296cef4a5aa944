"""Training: the loss, AdamW and its schedule, and the loop with evaluation and checkpoints.

A single process reads its batches and draws from the global RNG exactly as the book's
DataLoader loop does, so the default the-verdict run prints the book's losses. Under torchrun
every process takes its rows of the same global batch and DistributedDataParallel averages
the gradients, so N processes follow the single-process run with the same global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mygpt.book import (
    calc_loss_batch,
)
from mygpt.data.windows import TokenWindows, WindowOrder
from mygpt.errors import NonFiniteError, UserError
from mygpt.lora import adapter_state, has_lora, load_adapter_state
from mygpt.model import GPTModel
from mygpt.settings import (
    require,
    require_non_negative,
    require_positive,
    require_seed,
    setting,
)
from mygpt.training.distributed import Dist

# The learning rates a run defaults to (RunConfig.resolve picks one): the book's from scratch
# and for fine-tuning (chapter 5); with LoRA, whose adapters start at zero and train alone, the
# LoRA paper's rate for GPT-2 medium and large (docs/finetuning.md: a small model wants more).
FROM_SCRATCH_LR, FINE_TUNING_LR, LORA_LR = 4e-4, 5e-5, 2e-4
TRAINING, REPORTS = "training", "evaluation, samples and files"  # groups of v1's --help


@dataclass(frozen=True)
class TrainSettings:
    """How to train; the defaults are the book's the-verdict run."""

    epochs: int = setting(10, "passes over the data", group=TRAINING, positive=True)
    max_steps: int | None = setting(
        None, "optimizer steps, instead of epochs", group=TRAINING, positive=True
    )
    batch_size: int = setting(2, "windows per process", group=TRAINING, positive=True)
    grad_accum: int = setting(
        1, "forward/backward passes per optimizer step", group=TRAINING, positive=True
    )
    # None: FROM_SCRATCH_LR, or the fine-tuning rate once RunConfig.resolve has run.
    lr: float | None = setting(
        None,
        f"AdamW peak learning rate (default: {FROM_SCRATCH_LR:g}; {FINE_TUNING_LR:g} with "
        f"--init-from; {LORA_LR:g} with --lora-rank)",
        group=TRAINING,
    )
    warmup_steps: int = setting(0, "linear warm-up from lr/N to lr", group=TRAINING)
    lr_decay: Literal["constant", "cosine"] = setting(
        "constant", None, group=TRAINING, choices=("constant", "cosine")
    )
    min_lr: float | None = setting(None, "end of cosine decay (default: lr / 10)", group=TRAINING)
    weight_decay: float = setting(0.1, "AdamW weight decay", group=TRAINING)
    decay_matrices_only: bool = setting(False, "no decay on biases and norms", group=TRAINING)
    grad_clip: float | None = setting(None, "clip the global gradient norm to this", group=TRAINING)
    seed: int = setting(123, "seeds data order, weights, dropout", group=TRAINING)
    # A step whose loss or gradient norm is nan or infinite: skip its update and go on (True),
    # or stop with a NonFiniteError before anything non-finite reaches the weights (False).
    allow_nonfinite: bool = setting(
        False,
        "a step whose loss or gradient norm is nan or infinite is skipped (no update, a "
        "warning) instead of stopping the run",
        group=TRAINING,
    )
    activation_checkpointing: bool = setting(
        False,
        "keep only each block's input for the backward pass and recompute the rest: far "
        "less memory for long contexts and large models, for about a third more compute",
        group=TRAINING,
    )
    eval_freq: int = setting(
        5, "evaluate after step 0 and every N steps", group=REPORTS, positive=True
    )
    eval_iter: int = setting(5, "batches averaged per loss estimate", group=REPORTS, positive=True)

    def __post_init__(self) -> None:
        require_positive(self, "epochs", "max_steps", "batch_size", "grad_accum")
        require_positive(self, "eval_freq", "eval_iter")
        require_non_negative(self, "warmup_steps", "weight_decay")
        require_seed(self)
        for name in ("lr", "min_lr", "grad_clip"):
            value = getattr(self, name)
            require(value is None or value > 0, name, f"must be positive, got {value}")

    @property
    def peak_lr(self) -> float:
        return FROM_SCRATCH_LR if self.lr is None else self.lr


def lr_at(step: int, settings: TrainSettings, total_steps: int) -> float:
    """The learning rate of 0-based optimizer step `step`."""
    lr, warmup = settings.peak_lr, settings.warmup_steps
    if step < warmup:
        return lr * (step + 1) / warmup
    if settings.lr_decay == "constant":
        return lr
    min_lr = lr / 10 if settings.min_lr is None else settings.min_lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(
    model: GPTModel,
    lr: float,
    weight_decay: float,
    device: torch.device | str,
    decay_matrices_only: bool = False,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; the fused kernel where the device has one (same
    maths, far faster on a CPU)."""
    params: Any = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters
    if decay_matrices_only:
        params = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    fused = torch.device(device).type in ("cpu", "cuda", "mps")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


# --- Real runs ----------------------------------------------------------------------------


@dataclass
class TrainState:
    """Where a run is: what a checkpoint holds besides weights, optimizer and RNG states."""

    step: int = 0  # optimizer steps done
    epoch: int = 1  # the epoch in progress, from 1
    epoch_step: int = 0  # steps done in this epoch
    epoch_seed: int | None = None  # seed of this epoch's shuffle; None until drawn
    tokens_seen: int = 0
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    eval_tokens_seen: list[int] = field(default_factory=list)
    task_steps: list[int] = field(default_factory=list)  # where --eval-task was scored
    task_scores: list[float] = field(default_factory=list)


def unwrap(model: nn.Module) -> GPTModel:
    """The GPTModel inside DistributedDataParallel and torch.compile wrappers."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


def wrap_for_training(
    model: GPTModel, device: torch.device, dist: Dist, compile: bool = False
) -> nn.Module:
    """The model as the training loop runs it: compiled if asked, in DDP under torchrun."""
    net: nn.Module = torch.compile(model) if compile else model
    if dist.enabled:
        net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    return net


class Trainer:
    """Trains a model on windows of tokens, one process or one of torchrun's.

    `model` is a GPTModel or the module `wrap_for_training` made of one; `Trainer.gpt` is the
    GPTModel inside, for sampling and saving.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_windows: TokenWindows,
        val_windows: TokenWindows,
        settings: TrainSettings,
        device: torch.device,
        dist: Dist | None = None,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ):
        self.model, self.optimizer, self.settings = model, optimizer, settings
        self.train_windows, self.val_windows = train_windows, val_windows
        self.device, self.autocast = device, autocast
        self.dist = dist or Dist()
        self.state = TrainState()
        d = self.dist
        self.order = WindowOrder(
            len(train_windows), settings.batch_size, settings.grad_accum, d.world_size, d.rank
        )
        self.steps_per_epoch = self.order.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise UserError(
                f"{len(train_windows)} training windows are fewer than one global batch of "
                f"{self.order.global_batch} (batch size x gradient accumulation x processes)"
            )
        self.total_steps = settings.max_steps or settings.epochs * self.steps_per_epoch
        self.skipped_steps: list[int] = []  # with allow_nonfinite: steps not applied

    @property
    def gpt(self) -> GPTModel:
        return unwrap(self.model)

    # --- the loop ---------------------------------------------------------------------------

    def run(
        self,
        on_step: Callable[[TrainState, float, torch.Tensor], None] | None = None,
        on_eval: Callable[[TrainState, float, float], None] | None = None,
        on_epoch_end: Callable[[TrainState], None] | None = None,
        on_save: Callable[[], None] | None = None,
        save_every: int = 0,
        stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Train to `total_steps`; False if `stop()` turned true (on any process) first.

        Callbacks see the state after each step: on_step also gets the step's learning rate
        and gradient norm (a 0-dim tensor, before clipping), on_eval the losses at
        evaluations, on_epoch_end comes at the last step of an epoch, on_save every
        `save_every` steps (not after the last).
        """
        settings, state = self.settings, self.state
        self.model.train()
        while state.step < self.total_steps:
            if self.dist.any(stop()):
                return False
            lr, grad_norm = self._train_step()
            if on_step:
                on_step(state, lr, grad_norm)
            if (state.step - 1) % settings.eval_freq == 0:
                train_loss, val_loss = self.estimate_losses()
                state.train_losses.append(train_loss)
                state.val_losses.append(val_loss)
                state.eval_tokens_seen.append(state.tokens_seen)
                if on_eval:
                    on_eval(state, train_loss, val_loss)
                for name, loss in (("training", train_loss), ("validation", val_loss)):
                    if not (math.isfinite(loss) or settings.allow_nonfinite):
                        raise NonFiniteError(f"the {name} loss is {loss} at step {state.step - 1}")
            if state.epoch_step == self.steps_per_epoch:
                if on_epoch_end:
                    on_epoch_end(state)
                state.epoch, state.epoch_step, state.epoch_seed = state.epoch + 1, 0, None
            periodic = save_every and state.step % save_every == 0
            if on_save and periodic and state.step < self.total_steps:
                on_save()
        return True

    def _train_step(self) -> tuple[float, torch.Tensor]:
        settings, state, dist = self.settings, self.state, self.dist
        if state.epoch_seed is None:
            state.epoch_seed = WindowOrder.draw_seed(dist.shared_seed)
        order = self.order.shuffled(state.epoch_seed)
        lr = lr_at(state.step, settings, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=self.device)
        for accum_pass in range(settings.grad_accum):
            rows = self.order.rows(order, state.epoch_step, accum_pass)
            inputs, targets = self.train_windows.batch(rows)
            last = accum_pass == settings.grad_accum - 1
            # DDP averages gradients across processes; only the last pass of a step needs to.
            sync = nullcontext() if last or not dist.enabled else self.model.no_sync()
            with sync:
                with self.autocast():
                    loss = calc_loss_batch(inputs, targets, self.model, self.device)
                (loss / settings.grad_accum).backward()
                step_loss += loss.detach().float() / settings.grad_accum
        params = [p for p in self.model.parameters() if p.grad is not None]
        if settings.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if self._step_is_finite(step_loss, grad_norm):
            self.optimizer.step()
        else:
            self.skipped_steps.append(state.step)
        state.step += 1
        state.epoch_step += 1
        state.tokens_seen += self.order.global_batch * self.train_windows.context_length
        return lr, grad_norm

    # --- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def estimate_losses(self) -> tuple[float, float]:
        """Train and validation loss, each over `eval_iter` batches, in eval mode.

        As in the book: training batches from a fresh shuffle, validation from the start.
        """
        self.model.eval()
        try:
            train_seed = WindowOrder.draw_seed(self.dist.shared_seed)
            train_loss = self._mean_loss(self.train_windows, train_seed, drop_last=True)
            WindowOrder.draw_seed(self.dist.shared_seed, shuffle=False)
            val_loss = self._mean_loss(self.val_windows, None, drop_last=False)
        finally:
            self.model.train()
        return train_loss, val_loss

    # --- checkpoints ------------------------------------------------------------------------

    def _step_is_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Whether a step's loss and gradient norm are finite on every process; if not, a
        NonFiniteError unless the settings allow_nonfinite (then the step is to be skipped)."""
        finite = torch.isfinite(torch.stack([loss, grad_norm.float()])).tolist()
        if not self.dist.any(not all(finite)):
            return True
        if self.settings.allow_nonfinite:
            return False
        what = "training loss" if not finite[0] else "gradient norm"
        value = (loss if not finite[0] else grad_norm).item()
        raise NonFiniteError(f"the {what} is {value} at step {self.state.step}")

    def _mean_loss(self, windows: TokenWindows, seed: int | None, drop_last: bool) -> float:
        """Average of per-batch mean losses over the first `eval_iter` batches of `windows`
        (shuffled by `seed`, or in order), each process scoring its own rows."""
        d, settings = self.dist, self.settings
        model = self.model  # DDP's gradient machinery has no part in scoring: use the module
        forward = model.module if isinstance(model, DistributedDataParallel) else model
        order = WindowOrder(len(windows), settings.batch_size, 1, d.world_size, d.rank)
        rows = order.shuffled(seed) if seed is not None else range(len(windows))
        n_batches = len(windows) // order.global_batch
        if not drop_last:
            n_batches = math.ceil(len(windows) / order.global_batch)
        n_batches = min(n_batches, settings.eval_iter)
        total = 0.0
        for k in range(n_batches):
            mine = order.rows(rows, k)  # the last validation batch may be short or empty
            loss_sum, n_tokens = 0.0, 0
            if len(mine):
                inputs, targets = windows.batch(mine)
                with self.autocast():
                    loss = calc_loss_batch(inputs, targets, forward, self.device).item()
                n_tokens = int((targets != -100).sum())  # padding of instruction batches: -100
                loss_sum = loss * n_tokens
            loss_sum, n_tokens = d.sum([loss_sum, n_tokens])
            total += loss_sum / n_tokens
        return total / n_batches

    def _data_signature(self) -> dict[str, int]:
        """What resuming needs to find unchanged in the data."""
        return {
            "train_tokens": len(self.train_windows.tokens),
            "val_tokens": len(self.val_windows.tokens),
            "context_length": self.train_windows.context_length,
            "stride": self.train_windows.stride,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume from here, as plain data (collective under torchrun: every process
        calls it): the trainer's fields of checkpoint.pt (io/checkpoint.py)."""
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        gpt = self.gpt
        return {
            "model": adapter_state(gpt) if has_lora(gpt) else gpt.state_dict(),  # LoRA: adapters
            "config": asdict(gpt.cfg),
            "optimizer": self.optimizer.state_dict(),
            "state": asdict(self.state),
            "data": self._data_signature(),
            "rng": self.dist.gather(rng),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """The inverse of state_dict (a Checkpoint's to_dict() holds it); other data or windows
        than the saved run's: a UserError."""
        if saved["data"] != self._data_signature():
            raise UserError(
                f"the checkpoint was trained on other data or windows ({saved['data']}); "
                f"this run has {self._data_signature()}"
            )
        if has_lora(self.gpt):
            load_adapter_state(self.gpt, saved["model"])
        else:
            self.gpt.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = TrainState(**saved["state"])
        rngs, rank = saved["rng"], self.dist.rank
        if rank < len(rngs):  # a process the saved run did not have keeps its seed
            torch.set_rng_state(rngs[rank]["cpu"])
            if "cuda" in rngs[rank] and self.device.type == "cuda":
                torch.cuda.set_rng_state(rngs[rank]["cuda"], self.device)
