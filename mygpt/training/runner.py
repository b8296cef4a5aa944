"""Running a RunConfig as MyGPT_v1_local-train.py does: `train_run` and `eval_run`.

A notebook calls them too: they print the book's lines, and return the model and its losses
(or the score). Under torchrun every process calls them; rank 0 speaks and saves.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch
from tqdm import tqdm

from mygpt.book import progress_line, sample_line
from mygpt.config import GPTConfig
from mygpt.console import GracefulStop, banner
from mygpt.data.windows import TokenWindows
from mygpt.devices import (
    allow_tf32,
    has_native_bfloat16,
    is_out_of_memory,
    make_autocast,
    pick_device,
    resolve_dtype,
    return_freed_memory,
)
from mygpt.errors import NonFiniteError, SaveError
from mygpt.evaluation.score import TextScore
from mygpt.io.checkpoint import Checkpoint, read_checkpoint
from mygpt.io.files import removed_if_left_empty
from mygpt.lora import (
    check_rank,
    has_lora,
    lora_summary,
)
from mygpt.model import GPTModel
from mygpt.tokenizer import tokenizer_to_text
from mygpt.training.benchmark import TrainingBenchmark
from mygpt.training.data import load_run_data
from mygpt.training.distributed import Dist, init_distributed, shutdown_distributed
from mygpt.training.outputs import RunOutputs, claim_output_dir
from mygpt.training.preflight import (
    Plan,
    check_disk,
    check_memory,
    check_output_dir,
    lora_parameters,
    n_parameters,
)
from mygpt.training.run_config import DEFAULT_DATA, RunConfig
from mygpt.training.start import run_tokenizer, start_model
from mygpt.training.trainer import (
    Trainer,
    TrainState,
    make_optimizer,
    wrap_for_training,
)


@dataclass
class TrainResult:
    """What a training run leaves: the trained model, its losses and position, and the signal
    (SIGINT, SIGTERM) that stopped it before the end, if one did (its checkpoint holds the rest)."""

    model: GPTModel
    state: TrainState
    config: RunConfig  # resolved: every default decided
    stopped_by: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.stopped_by is not None

    @property
    def exit_code(self) -> int:
        """0, or the shell's code for the signal that stopped the run (130, 143)."""
        return 0 if self.stopped_by is None else 128 + self.stopped_by


def saved_config(checkpoint: Checkpoint, path) -> RunConfig:
    """The run configuration a checkpoint was written with, also by MyGPT before RunConfig."""
    checkpoint.require_resumable(path)
    if checkpoint.run is not None:
        return RunConfig.from_dict(checkpoint.run)
    return RunConfig.from_flags(checkpoint.args)  # the script's flags as they were, flat


def train_run(requested: RunConfig, checkpoint: Checkpoint | None = None) -> TrainResult:
    """Train as v1 does: checks, model, data, the loop with its reports, the plot and weights.

    With --resume, `checkpoint` is its contents when already read (else it is read here).
    """
    # A new model's shape is known now: a bad one is refused before anything is read.
    config = requested if requested.is_fine_tuning else requested.resolve()
    if config.outputs.resume and checkpoint is None:
        checkpoint = read_checkpoint(config.outputs.resume, resume=True)
    dist, device = init_distributed(pick_device(config.device.device))
    try:
        if not dist.is_main:  # rank 0 holds the output folder for all of them
            return _train(config, checkpoint, dist, device)
        with removed_if_left_empty(config.outputs.output_dir):
            check_output_dir(config.outputs.output_dir)
            with claim_output_dir(config.outputs.output_dir):
                return _train(config, checkpoint, dist, device)
    finally:
        shutdown_distributed(dist)


def eval_run(requested: RunConfig, checkpoint: Checkpoint | None = None) -> TextScore:
    """--eval-only: the model's loss on all of --data, one line on stdout (the rest on stderr)."""
    if requested.outputs.resume and checkpoint is None:
        checkpoint = read_checkpoint(requested.outputs.resume, resume=True)
    dist, device = init_distributed(pick_device(requested.device.device))
    log = partial(print, file=sys.stderr)
    try:
        with dist.main_first():  # the text first: a bad --data is refused before any download
            tokenizer = run_tokenizer(requested, checkpoint)
            data = load_run_data(requested, tokenizer, log, split=False)
        started = start_model(requested, checkpoint, dist, device, log, n_vocab=tokenizer.n_vocab)
        config = started.config  # resolved against the weights
        autocast = make_autocast(device, config.device.dtype)
        score = data.score(started.model, config.train.batch_size, autocast)
        if dist.is_main:
            print(f"{score} of {shown_path(config.data.data)}")
        return score
    finally:
        shutdown_distributed(dist)


def _train(requested: RunConfig, checkpoint: Checkpoint | None, dist: Dist, device) -> TrainResult:
    print0 = print if dist.is_main else lambda *a, **k: None
    allow_tf32(requested.device.tf32)
    if requested.lora.enabled or requested.train.activation_checkpointing:
        return_freed_memory()  # what these runs save would otherwise stay in malloc's heap
    tokenizer = run_tokenizer(requested, checkpoint)
    with dist.main_first():  # rank 0 tokenizes into the cache first; the others then read it
        data = load_run_data(requested, tokenizer, print0, split=True)
    benchmark = None
    if requested.report.eval_task and dist.is_main:  # scored by the main process only
        benchmark = TrainingBenchmark(requested, tokenizer)
    checks = partial(preflight, device, dist)
    started = start_model(
        requested, checkpoint, dist, device, print0, checks, n_vocab=tokenizer.n_vocab
    )
    model, config = started.model, started.config  # resolved against the weights
    t = config.train
    train_windows, val_windows = data.batches(
        config, model.cfg, t.batch_size * t.grad_accum * dist.world_size
    )
    prompt = data.sample_prompt(config.report.start_context)
    show_model(model, started.origin, device, dist, print0)

    print0(banner("TRAINING OUR GPT MODEL"))
    print0(f"\nLoaded training data from: {shown_path(config.data.data)}")
    if benchmark:
        print0(benchmark.describe())
    show_settings(config, checkpoint, device, print0)
    trainer = make_trainer(config, model, train_windows, val_windows, device, dist)
    if checkpoint:
        trainer.load_state_dict(checkpoint.to_dict())
        print0(
            f"Resuming from {config.outputs.resume} at step {trainer.state.step} of "
            f"{trainer.total_steps}"
        )
    else:
        print0("Starting Training...")
    metadata = {"template": data.template} if data.template else {}
    if (recorded := tokenizer_to_text(tokenizer)) is not None:  # GPT-2's is the default
        metadata["tokenizer"] = recorded
    files = RunOutputs(
        config.outputs.output_dir, trainer, config.to_dict(), metadata or None, started.adapter
    )
    start = time.perf_counter()
    with GracefulStop() as stop:  # also over the final save: a signal then waits for it
        try:
            finished = run_training(
                config, trainer, tokenizer, dist, files, prompt, stop, benchmark
            )
        except NonFiniteError as e:
            advice = "lower --lr or set --grad-clip (--allow-nonfinite skips such steps)"
            raise NonFiniteError(f"{e}: {advice}; {files.last_saved()}") from None
        except RuntimeError as e:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(e):
                raise
            raise out_of_memory_error(config, device, files) from None
        if not finished:
            report_interrupted(trainer, files, dist)
            return TrainResult(trainer.gpt, trainer.state, config, stop.signal)
        stop.message = "Saving the trained model first (Ctrl-C again: a checkpoint instead)..."
        try:
            finish(config, trainer, tokenizer, dist, files, time.perf_counter() - start, prompt)
        except KeyboardInterrupt:  # the second Ctrl-C: what finish wrote is whole, or not there
            report_interrupted(trainer, files, dist)
            return TrainResult(trainer.gpt, trainer.state, config, stop.signal or signal.SIGINT)
    return TrainResult(trainer.gpt, trainer.state, config)


def finish(
    config: RunConfig, trainer: Trainer, tokenizer, dist: Dist, files, seconds, prompt: str
) -> None:
    """The book's closing lines, then the weights, the plot and the final checkpoint."""
    print0 = print if dist.is_main else lambda *a, **k: None
    print0(banner("POST TRAINING OUTPUT"))
    print_sample(config, trainer, tokenizer, dist, prompt)
    print0(f"Training completed in {seconds / 60:.2f} minutes.")
    if dist.is_main:
        weights, plot = files.save_results()  # first: they matter more than a checkpoint
        print(f"Loss plot saved to: {plot}")
        print(f"Model weights saved to: {weights}")
        if files.adapter:
            print(f"LoRA adapters saved to: {files.adapter_path}")
    if config.outputs.save_every:
        files.save_checkpoint("the final checkpoint")
        print0(f"Checkpoint saved to: {files.checkpoint_path}")


def show_settings(config: RunConfig, checkpoint: Checkpoint | None, device, print0) -> None:
    """What --dtype auto chose, and the settings a fine-tuning run defaults to."""
    if config.device.dtype == "auto":
        native = "native" if has_native_bfloat16(device) else "not native"
        print0(f"--dtype auto: {resolve_dtype(device, 'auto')} (bfloat16 is {native} on {device})")
    if config.is_fine_tuning and not checkpoint:
        t = config.train
        print0(
            f"Fine-tuning with lr {t.lr:g}, drop rate {config.model.drop_rate:g}, "
            f"weight decay {t.weight_decay:g}"
        )


def make_trainer(
    config: RunConfig,
    model: GPTModel,
    train_windows: TokenWindows,
    val_windows: TokenWindows,
    device,
    dist: Dist,
) -> Trainer:
    """AdamW, the compiled or DDP-wrapped model, and the loop that steps them."""
    t = config.train
    optimizer = make_optimizer(model, t.lr, t.weight_decay, device, t.decay_matrices_only)
    model.activation_checkpointing = t.activation_checkpointing
    net = wrap_for_training(model, device, dist, config.device.compile)
    autocast = make_autocast(device, config.device.dtype)
    return Trainer(net, optimizer, train_windows, val_windows, t, device, dist, autocast)


def out_of_memory_error(config: RunConfig, device, files: RunOutputs) -> SaveError:
    """Out of memory mid-run: the same batch per step in smaller passes, and what was saved."""
    b, accum = config.train.batch_size, config.train.grad_accum
    smaller = (
        f"--batch-size {max(1, b // 2)} --grad-accum {accum * 2}"
        if b > 1
        else ("a smaller model or --context-length")
    )
    return SaveError(
        f"out of memory on {device.type} at --batch-size {b}: try {smaller} "
        f"(the same batch per step); {files.last_saved()}"
    )


def report_interrupted(trainer: Trainer, files: RunOutputs, dist: Dist) -> None:
    """Ctrl-C or SIGTERM stopped the run: save its state and say how to continue."""
    path = files.save_checkpoint("the interrupted run's state")
    if dist.is_main:
        print(
            f"Interrupted after step {trainer.state.step} of {trainer.total_steps}; "
            f"checkpoint saved to {path}\nContinue with: --resume {path}",
            file=sys.stderr,
        )


def preflight(device, dist: Dist, config: RunConfig, cfg: GPTConfig, tied: bool) -> None:
    """Room on disk for the run's files and in memory for its training steps, or a UserError."""
    lora = config.lora
    if lora.enabled:
        check_rank(cfg, lora.lora_rank)
    plan = Plan(
        lora.lora_rank,
        lora.targets if lora.enabled else (),
        2 if lora.dtype == torch.bfloat16 else 4,
        config.train.activation_checkpointing,
    )
    if not config.no_memory_check:
        dtype = resolve_dtype(device, config.device.dtype)
        check_memory(cfg, tied, config.train.batch_size, dtype, device, plan)
    if dist.is_main:
        n_trained = lora_parameters(cfg, lora.lora_rank, lora.targets) if lora.enabled else None
        check_disk(
            config.outputs.output_dir,
            n_parameters(cfg, tied),
            bool(config.outputs.save_every),
            n_trained,
        )


def show_model(model: GPTModel, origin: str | None, device, dist: Dist, print0: Callable) -> None:
    """The configuration listing of the book's run, and where the weights came from."""
    if origin is None:
        print0(banner("UNTRAINED GPT MODEL"))
        print0("\nUntrained model created with the following configuration:")
    else:
        print0(banner("PRETRAINED GPT MODEL"))
        print0("\nModel loaded with the following configuration:")
    for name, value in asdict(model.cfg).items():
        print0(f"- {name}: {value}")
    if origin is not None:
        print0(f"Weights from: {origin}")
    processes = f", {dist.world_size} processes" if dist.enabled else ""
    print0(f"({model.num_parameters():,} parameters, on {device.type}{processes})")
    if has_lora(model):
        print0(lora_summary(model))
    print0()


def shown_path(path):
    return DEFAULT_DATA.name if path == DEFAULT_DATA else path  # the seed's "the-verdict.txt"


def run_training(
    config: RunConfig,
    trainer: Trainer,
    tokenizer,
    dist: Dist,
    files: RunOutputs,
    prompt: str,
    stop: Callable[[], bool],
    benchmark: TrainingBenchmark | None = None,
) -> bool:
    """Trainer.run with the book's reports (and `benchmark`'s score at the evaluations it is
    due); False if `stop` (Ctrl-C) stopped it first."""
    every = config.report.sample_every

    def on_step(state: TrainState, lr: float, grad_norm) -> None:
        bar.update()
        if dist.is_main and trainer.skipped_steps and trainer.skipped_steps[-1] == state.step - 1:
            tqdm.write(
                f"warning: step {state.step - 1} skipped: its loss or gradient norm is "
                f"not finite (--allow-nonfinite)",
                file=sys.stderr,
            )
        if every and state.step % every == 0:
            print_sample(config, trainer, tokenizer, dist, prompt)

    def on_eval(state: TrainState, train_loss: float, val_loss: float) -> None:
        if not dist.is_main:
            return
        line = progress_line(state.epoch, state.step - 1, train_loss, val_loss)
        if benchmark and benchmark.due(state.step - 1):
            score = benchmark.score(trainer.gpt)
            state.task_steps.append(state.step - 1)
            state.task_scores.append(score)
            line += f", {benchmark.name} {score:.4f}"
        tqdm.write(line)

    # The bar lives on stderr and only on a terminal; tqdm.write keeps it below the printed lines.
    with tqdm(
        total=trainer.total_steps,
        initial=trainer.state.step,
        unit="step",
        leave=False,
        disable=None if dist.is_main else True,
    ) as bar:
        return trainer.run(
            on_step=on_step,
            on_eval=on_eval,
            on_epoch_end=lambda state: print_sample(config, trainer, tokenizer, dist, prompt),
            on_save=files.save_periodic,
            save_every=config.outputs.save_every,
            stop=stop,
        )


def print_sample(config: RunConfig, trainer: Trainer, tokenizer, dist: Dist, prompt: str) -> None:
    """A greedy completion of `prompt`, on one line."""
    if dist.is_main:
        with trainer.autocast():
            tqdm.write(sample_line(trainer.gpt, tokenizer, prompt, config.report.sample_tokens))
