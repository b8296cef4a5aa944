"""What a training run writes in its output folder: checkpoint.pt, model.safetensors and
loss-plot.png. A write that fails says what is lost and which checkpoint is the last good one.
One run at a time writes there: it holds the folder's lock file while it runs.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mygpt.errors import SaveError, UserError
from mygpt.io.checkpoint import FORMAT, Checkpoint, write_checkpoint
from mygpt.io.model_files import save_model
from mygpt.lora import AdapterInfo, merged, save_adapter
from mygpt.training.plot import plot_losses
from mygpt.training.trainer import Trainer

LOCK_FILE = ".mygpt-run.lock"


@contextmanager
def claim_output_dir(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock for a run; a second run into the same folder is a UserError.

    The kernel releases the lock (flock) when its process ends, however it ends, so a lock
    file left by a killed run is simply taken over; the file holds the holder's pid.
    """
    path = folder / LOCK_FILE
    fd = _lock(path, folder)
    if fd is None:
        yield
        return
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: whoever opens it next makes a new one
        os.close(fd)


def _lock(path: Path, folder: Path) -> int | None:
    """The descriptor of `path`, locked; None where the file system has no locks."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"--output-dir {folder} is in use by another run (pid {pid})") from None
        except OSError as e:  # some network mounts
            os.close(fd)
            with suppress(FileNotFoundError):
                os.unlink(path)
            print(
                f"warning: --output-dir {folder} cannot be locked ({e.strerror}): a second "
                "run into it would not be noticed",
                file=sys.stderr,
            )
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed it as we opened it: lock the one there now


class RunOutputs:
    """The files of one run in `output_dir`; `run` (RunConfig.to_dict) is saved with each
    checkpoint, so that --resume continues with the same settings."""

    def __init__(
        self,
        output_dir: Path,
        trainer: Trainer,
        run: dict[str, Any],
        model_metadata: dict[str, str] | None = None,  # kept in model.safetensors
        adapter: AdapterInfo | None = None,  # a LoRA run's: kept in adapter.safetensors
    ):
        self.output_dir, self.trainer, self.run = output_dir, trainer, run
        self.model_metadata, self.adapter = model_metadata, adapter
        self.checkpoint_path = output_dir / "checkpoint.pt"
        self.adapter_path = output_dir / "adapter.safetensors"
        self.saved_step: int | None = None  # of the last checkpoint this run wrote

    def save_checkpoint(self, what: str) -> Path:
        """checkpoint.pt; every process takes part (it gathers their RNG states)."""
        state = self.trainer.state_dict()
        if self.trainer.dist.is_main:
            try:
                lora = self.adapter.to_dict() if self.adapter else None
                tokenizer = (self.model_metadata or {}).get("tokenizer")
                saved = {**state, "run": self.run, "lora": lora, "format": FORMAT}
                saved["tokenizer"] = tokenizer
                checkpoint = Checkpoint.from_dict(saved, self.checkpoint_path)
                write_checkpoint(checkpoint, self.checkpoint_path)
            except OSError as e:
                raise self.lost(what, self.checkpoint_path, e) from None
        self.saved_step = self.trainer.state.step
        return self.checkpoint_path

    def save_periodic(self) -> None:
        """A periodic checkpoint that cannot be written costs a warning, not the run."""
        try:
            self.save_checkpoint("a periodic checkpoint")
        except SaveError as e:
            tqdm.write(f"warning: {e}; training goes on", file=sys.stderr)

    def save_results(self) -> tuple[Path, Path]:
        """model.safetensors (a LoRA run's merged, after its adapter.safetensors), then
        loss-plot.png (the weights matter more); their paths."""
        trainer, state = self.trainer, self.trainer.state
        weights, plot = self.output_dir / "model.safetensors", self.output_dir / "loss-plot.png"
        model = trainer.gpt
        if self.adapter:
            try:
                save_adapter(model, self.adapter, self.adapter_path)
            except OSError as e:
                raise self.lost("the trained adapters", self.adapter_path, e) from None
            model = merged(model)
        try:
            save_model(model, weights, self.model_metadata)
        except OSError as e:
            raise self.lost("the trained weights", weights, e) from None
        del model
        epochs = trainer.total_steps / trainer.steps_per_epoch
        try:
            task = None
            if state.task_steps:  # --eval-task's scores, where the plot puts their evaluations
                n, freq = len(state.train_losses), trainer.settings.eval_freq
                x = [epochs * (step // freq) / max(n - 1, 1) for step in state.task_steps]
                task = (x, state.task_scores, self.run["report"]["eval_task"])
            plot_losses(
                epochs, state.eval_tokens_seen, state.train_losses, state.val_losses, plot, task
            )
        except OSError as e:
            raise self.lost("the loss plot", plot, e) from None
        return weights, plot

    def last_saved(self) -> str:
        if self.saved_step is None:
            return "this run wrote no checkpoint (--save-every N writes them)"
        return f"the last checkpoint, {self.checkpoint_path}, is from step {self.saved_step}"

    def lost(self, what: str, path: Path, e: OSError) -> SaveError:
        return SaveError(
            f"could not write {path} ({e.strerror}): {what} not saved; {self.last_saved()}"
        )
