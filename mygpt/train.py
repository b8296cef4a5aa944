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
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .data import TokenWindows
from .distributed import Dist
from .errors import UserError
from .model import GPTModel


@dataclass(frozen=True)
class TrainSettings:
    """How to train; the defaults are the book's the-verdict run."""

    batch_size: int = 2  # windows per forward pass, per process
    grad_accum: int = 1  # forward/backward passes per optimizer step
    epochs: int = 10
    max_steps: int | None = None  # optimizer steps; replaces `epochs` when set
    lr: float = 4e-4
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    lr_decay: Literal["constant", "cosine"] = "constant"
    min_lr: float | None = None  # where cosine decay ends; default lr / 10
    weight_decay: float = 0.1
    decay_matrices_only: bool = False  # no decay on biases and LayerNorm scales and shifts
    grad_clip: float | None = None  # max global gradient norm
    eval_freq: int = 5  # evaluate after step 0 and every `eval_freq` steps
    eval_iter: int = 5  # batches per loss estimate


def lr_at(step: int, s: TrainSettings, total_steps: int) -> float:
    """The learning rate of 0-based optimizer step `step`."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    if s.lr_decay == "constant":
        return s.lr
    min_lr = s.lr / 10 if s.min_lr is None else s.min_lr
    progress = (step - s.warmup_steps) / max(1, total_steps - s.warmup_steps)
    return min_lr + 0.5 * (s.lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(
    model: GPTModel,
    lr: float,
    weight_decay: float,
    device: torch.device | str,
    decay_matrices_only: bool = False,
) -> torch.optim.AdamW:
    """AdamW; the fused kernel where the device has one (same maths).

    On a 2-core CPU, fused AdamW takes a 124M model's optimizer step from ~1.2 s to ~0.13 s.
    """
    params: Any = model.parameters()
    if decay_matrices_only:
        named = list(model.named_parameters())
        params = [
            {"params": [p for _, p in named if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0},
        ]
    fused = torch.device(device).type in ("cpu", "cuda", "mps")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def calc_loss_batch(
    input_batch: torch.Tensor,
    target_batch: torch.Tensor,
    model: torch.nn.Module,
    device: torch.device | str,
) -> torch.Tensor:
    """Mean next-token cross-entropy of one batch."""
    input_batch = input_batch.to(device, non_blocking=True)
    target_batch = target_batch.to(device, non_blocking=True)
    logits = model(input_batch)  # (B, T, vocab_size)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


@torch.no_grad()
def calc_loss_loader(
    data_loader: DataLoader, model: GPTModel, device: torch.device, num_batches: int | None = None
) -> float:
    """Average batch loss over the first `num_batches` batches (all by default); nan if empty."""
    if len(data_loader) == 0:
        return math.nan
    num_batches = min(num_batches or len(data_loader), len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i == num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / num_batches


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


class Trainer:
    """Trains `model` on windows of tokens, one process or one of torchrun's."""

    def __init__(
        self,
        model: GPTModel,
        optimizer: torch.optim.Optimizer,
        train_windows: TokenWindows,
        val_windows: TokenWindows,
        settings: TrainSettings,
        device: torch.device,
        dist: Dist | None = None,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
        compile: bool = False,
    ):
        self.model, self.optimizer, self.settings = model, optimizer, settings
        self.train_windows, self.val_windows = train_windows, val_windows
        self.device, self.autocast = device, autocast
        self.dist = dist or Dist()
        self.state = TrainState()
        self.forward = torch.compile(model) if compile else model
        self.net = self.forward
        if self.dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.net = DistributedDataParallel(self.forward, device_ids=ids)
        self.global_batch = settings.batch_size * settings.grad_accum * self.dist.world_size
        self.steps_per_epoch = len(train_windows) // self.global_batch
        if self.steps_per_epoch == 0:
            raise UserError(
                f"{len(train_windows)} training windows are fewer than one global batch of "
                f"{self.global_batch} (batch size x gradient accumulation x processes)"
            )
        self.total_steps = settings.max_steps or settings.epochs * self.steps_per_epoch
        self._order: tuple[int, list[int]] | None = None  # (seed, window order) of the epoch

    # --- the loop ---------------------------------------------------------------------------

    def run(
        self,
        on_step: Callable[[TrainState], None] | None = None,
        on_eval: Callable[[TrainState, float, float], None] | None = None,
        on_epoch_end: Callable[[TrainState], None] | None = None,
        on_save: Callable[[], None] | None = None,
        save_every: int = 0,
        stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Train to `total_steps`; False if `stop()` turned true (on any process) first.

        Callbacks see the state after each step: on_step, on_eval at evaluations, on_epoch_end
        at the last step of an epoch, on_save every `save_every` steps (not after the last).
        """
        s, st = self.settings, self.state
        self.model.train()
        while st.step < self.total_steps:
            if self.dist.any(stop()):
                return False
            self._train_step()
            if on_step:
                on_step(st)
            if (st.step - 1) % s.eval_freq == 0:
                train_loss, val_loss = self.evaluate()
                st.train_losses.append(train_loss)
                st.val_losses.append(val_loss)
                st.eval_tokens_seen.append(st.tokens_seen)
                if on_eval:
                    on_eval(st, train_loss, val_loss)
            if st.epoch_step == self.steps_per_epoch:
                if on_epoch_end:
                    on_epoch_end(st)
                st.epoch, st.epoch_step, st.epoch_seed = st.epoch + 1, 0, None
            if on_save and save_every and st.step % save_every == 0 and st.step < self.total_steps:
                on_save()
        return True

    def _train_step(self) -> None:
        s, st, dist = self.settings, self.state, self.dist
        if st.epoch_seed is None:
            st.epoch_seed = self._loader_seed(shuffle=True)
        order = self._epoch_order(st.epoch_seed)
        rows = order[st.epoch_step * self.global_batch : (st.epoch_step + 1) * self.global_batch]
        lr = lr_at(st.step, s, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(s.grad_accum):
            first = (micro * dist.world_size + dist.rank) * s.batch_size
            inputs, targets = self.train_windows.batch(rows[first : first + s.batch_size])
            last = micro == s.grad_accum - 1
            # DDP averages gradients across processes; only the last pass of a step needs to.
            sync = nullcontext() if last or not dist.enabled else self.net.no_sync()
            with sync:
                with self.autocast():
                    loss = calc_loss_batch(inputs, targets, self.net, self.device)
                (loss / s.grad_accum).backward()
        if s.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        self.optimizer.step()
        st.step += 1
        st.epoch_step += 1
        st.tokens_seen += self.global_batch * self.train_windows.context_length

    def _loader_seed(self, shuffle: bool) -> int | None:
        # Iterating a DataLoader draws a seed for its workers, then RandomSampler draws the
        # shuffle's: drawing both keeps the global RNG, and so dropout, where the book has it.
        self.dist.shared_seed()
        return self.dist.shared_seed() if shuffle else None

    def _epoch_order(self, seed: int) -> list[int]:
        if self._order is None or self._order[0] != seed:
            self._order = (seed, _shuffled(len(self.train_windows), seed))
        return self._order[1]

    # --- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Train and validation loss, each over `eval_iter` batches, in eval mode.

        As in the book: training batches from a fresh shuffle, validation from the start.
        """
        self.model.eval()
        try:
            rows = self.settings.batch_size * self.dist.world_size
            n_train = len(self.train_windows) // rows  # full batches only, as in training
            order = _shuffled(len(self.train_windows), self._loader_seed(shuffle=True))
            train_loss = self._mean_loss(self.train_windows, order, n_train)
            self._loader_seed(shuffle=False)
            n_val = math.ceil(len(self.val_windows) / rows)
            val_loss = self._mean_loss(self.val_windows, range(len(self.val_windows)), n_val)
        finally:
            self.model.train()
        return train_loss, val_loss

    def _mean_loss(self, windows: TokenWindows, order, n_batches: int) -> float:
        """Average of per-batch mean losses over the first `n_batches` (at most eval_iter)."""
        n_batches = min(n_batches, self.settings.eval_iter)
        b, rank = self.settings.batch_size, self.dist.rank
        total = 0.0
        for k in range(n_batches):
            start = k * b * self.dist.world_size + rank * b
            mine = order[start : start + b]  # the last validation batch may be short or empty
            loss_sum, n_tokens = 0.0, 0
            if len(mine):
                inputs, targets = windows.batch(mine)
                with self.autocast():
                    loss = calc_loss_batch(inputs, targets, self.forward, self.device).item()
                n_tokens = targets.numel()
                loss_sum = loss * n_tokens
            loss_sum, n_tokens = self.dist.sum([loss_sum, n_tokens])
            total += loss_sum / n_tokens
        return total / n_batches

    # --- checkpoints ------------------------------------------------------------------------

    def data_signature(self) -> dict[str, int]:
        """What resuming needs to find unchanged in the data."""
        return {
            "train_tokens": len(self.train_windows.tokens),
            "val_tokens": len(self.val_windows.tokens),
            "context_length": self.train_windows.context_length,
            "stride": self.train_windows.stride,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume from here: weights, optimizer, position, every process's RNG.

        Collective under torchrun: every process must call it.
        """
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "config": asdict(self.model.cfg),
            "optimizer": self.optimizer.state_dict(),
            "state": asdict(self.state),
            "settings": asdict(self.settings),
            "data": self.data_signature(),
            "rng": self.dist.gather(rng),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Continue from a `state_dict()`: the next step is the one the saved run would take."""
        if ckpt["data"] != self.data_signature():
            raise UserError(
                f"the checkpoint was trained on other data or windows ({ckpt['data']}); "
                f"this run has {self.data_signature()}"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = TrainState(**ckpt["state"])
        rngs = ckpt["rng"]
        if self.dist.rank < len(rngs):  # a process the saved run did not have keeps its seed
            torch.set_rng_state(rngs[self.dist.rank]["cpu"])
            if "cuda" in rngs[self.dist.rank] and self.device.type == "cuda":
                torch.cuda.set_rng_state(rngs[self.dist.rank]["cuda"], self.device)


def _shuffled(n: int, seed: int) -> list[int]:
    """The permutation RandomSampler yields for this seed."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()
