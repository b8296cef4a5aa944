"""Train a GPT-2 124M-shape model from scratch on the-verdict.txt and print samples as it learns.

Also trains on your own text (a file or a folder of .txt files), by epochs or steps, resumes
from checkpoints, and runs on several GPUs or CPU processes under torchrun.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from mygpt import (
    Corpus,
    GPTConfig,
    GPTModel,
    TokenWindows,
    UserError,
    evaluate_tokens,
    get_tokenizer,
    load_weights,
    reshaped,
)
from mygpt.checkpoint import load_checkpoint, model_from_state
from mygpt.cli import (
    GracefulStop,
    HelpFormatter,
    add_device_flags,
    add_download_flags,
    banner,
    download_settings,
    positive_int,
    run_main,
)
from mygpt.corpus import IN_MEMORY_LIMIT, load_corpus, load_tokens
from mygpt.devices import (
    allow_tf32,
    has_native_bfloat16,
    is_out_of_memory,
    make_autocast,
    pick_device,
    resolve_dtype,
)
from mygpt.distributed import Dist, init_distributed, shutdown_distributed
from mygpt.errors import DataError, NonFiniteError, SaveError
from mygpt.outputs import RunOutputs, claim_output_dir
from mygpt.preflight import check_disk, check_memory, check_output_dir, n_parameters
from mygpt.train import (
    Trainer,
    TrainSettings,
    TrainState,
    make_optimizer,
    progress_line,
    sample_line,
    wrap_for_training,
)
from mygpt.weights import source_config

DEFAULT_DATA = Path(__file__).with_name("the-verdict.txt")
# The model's shape: what --resume may not change, and what --init-from's weights decide.
SHAPE_FLAGS = ("context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias")
# The book's run from scratch (GPT-2 124M at context 256), and the book's fine-tuning settings.
FROM_SCRATCH = {"context_length": 256, "emb_dim": 768, "n_heads": 12, "n_layers": 12,
                "qkv_bias": False, "drop_rate": 0.1, "lr": 4e-4}  # fmt: skip
FINE_TUNING = {"drop_rate": 0.0, "lr": 5e-5}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="a UTF-8 text file, or a folder of .txt files (recursive)",
    )
    data.add_argument(
        "--train-ratio",
        type=float,
        default=0.9,
        help="share for training: of the characters, or of the tokens of a token file",
    )
    data.add_argument(
        "--memmap",
        action="store_true",
        help="tokenize into a uint16 file beside the data and memory-map it "
        f"(automatic above {IN_MEMORY_LIMIT // 2**20} MB)",
    )
    data.add_argument(
        "--stride", type=positive_int, help="step between windows (default: the context length)"
    )

    model = p.add_argument_group(
        "model", "Shape flags default to GPT-2 124M at context 256, or to the --init-from weights."
    )
    model.add_argument(
        "--init-from",
        metavar="SOURCE",
        help="start from these weights: a GPT-2 size (124M, 355M, 774M, 1558M), a checkpoint "
        "folder (OpenAI's or the hub's layout), or a v1 model.safetensors / checkpoint.pt",
    )
    model.add_argument(
        "--context-length",
        type=positive_int,
        help="tokens per window and the model's context (default: 256)",
    )
    model.add_argument("--emb-dim", type=positive_int, help="embedding width (default: 768)")
    model.add_argument("--n-layers", type=positive_int, help="transformer blocks (default: 12)")
    model.add_argument("--n-heads", type=positive_int, help="attention heads (default: 12)")
    model.add_argument(
        "--drop-rate",
        type=float,
        help=f"dropout (default: {FROM_SCRATCH['drop_rate']}; {FINE_TUNING['drop_rate']} "
        "with --init-from)",
    )
    model.add_argument(
        "--qkv-bias",
        action="store_const",
        const=True,
        help="biases on the query, key and value projections",
    )
    add_download_flags(model)

    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=10, help="passes over the data")
    train.add_argument("--max-steps", type=positive_int, help="optimizer steps, instead of epochs")
    train.add_argument("--batch-size", type=positive_int, default=2, help="windows per process")
    train.add_argument(
        "--grad-accum",
        type=positive_int,
        default=1,
        help="forward/backward passes per optimizer step",
    )
    train.add_argument(
        "--lr",
        type=float,
        help=f"AdamW peak learning rate (default: {FROM_SCRATCH['lr']}; {FINE_TUNING['lr']} "
        "with --init-from)",
    )
    train.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up from lr/N to lr")
    train.add_argument("--lr-decay", default="constant", choices=("constant", "cosine"))
    train.add_argument("--min-lr", type=float, help="end of cosine decay (default: lr / 10)")
    train.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    train.add_argument(
        "--decay-matrices-only", action="store_true", help="no decay on biases and norms"
    )
    train.add_argument("--grad-clip", type=float, help="clip the global gradient norm to this")
    train.add_argument("--seed", type=int, default=123, help="seeds data order, weights, dropout")
    train.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="a step whose loss or gradient norm is nan or infinite is skipped (no update, a "
        "warning) instead of stopping the run",
    )

    report = p.add_argument_group("evaluation, samples and files")
    report.add_argument(
        "--eval-freq", type=positive_int, default=5, help="evaluate after step 0 and every N steps"
    )
    report.add_argument(
        "--eval-iter", type=positive_int, default=5, help="batches averaged per loss estimate"
    )
    report.add_argument(
        "--start-context", metavar="TEXT", default="Every effort moves you", help="sample prompt"
    )
    report.add_argument("--sample-tokens", type=positive_int, default=50, help="tokens/sample")
    report.add_argument(
        "--sample-every", type=int, default=0, help="also sample every N steps (0: epochs only)"
    )
    report.add_argument(
        "--output-dir",
        type=Path,
        default=Path("."),
        help="where loss-plot.png, model.safetensors, checkpoint.pt go",
    )
    report.add_argument(
        "--save-every", type=int, default=0, help="checkpoint every N steps and at the end"
    )
    report.add_argument(
        "--resume", type=Path, help="continue from this checkpoint.pt, its flags the defaults"
    )
    report.add_argument(
        "--eval-only", action="store_true", help="print the loss on all of --data; no training"
    )
    report.add_argument(
        "--no-memory-check",
        action="store_true",
        help="train even if the estimated memory exceeds what the device has free",
    )

    add_device_flags(p.add_argument_group("device and precision"))
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict | None]:
    """Flags, and the checkpoint of --resume, whose saved flags are the defaults then."""
    p = build_parser()
    args = p.parse_args(argv)
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        if "args" not in checkpoint:
            raise UserError(f"{args.resume}: not a checkpoint of this script")
        p.set_defaults(**{k: v for k, v in checkpoint["args"].items() if k != "resume"})
        args = p.parse_args(argv)  # argparse converts the saved text of --data etc. to Path
    # Flags not given take the defaults of training from scratch or of fine-tuning; the shape
    # of --init-from's weights is only known once they are loaded (see start_model).
    for name, value in (FINE_TUNING if args.init_from else FROM_SCRATCH).items():
        if getattr(args, name) is None and not (args.init_from and name in SHAPE_FLAGS):
            setattr(args, name, value)
    if not 0.0 < args.train_ratio < 1.0:
        p.error("--train-ratio must be between 0 and 1")
    if args.emb_dim and args.n_heads and args.emb_dim % args.n_heads:
        p.error(f"--emb-dim {args.emb_dim} must be divisible by --n-heads {args.n_heads}")
    if not 0.0 <= args.drop_rate < 1.0:
        p.error("--drop-rate must be in [0, 1)")
    for flag in ("lr", "min_lr", "grad_clip"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    for flag in ("warmup_steps", "sample_every", "save_every"):
        if getattr(args, flag) < 0:
            p.error(f"--{flag.replace('_', '-')} must be >= 0")
    return args, checkpoint


def main() -> int:
    args, checkpoint = parse_args()
    dist, device = init_distributed(pick_device(args.device))
    try:
        if args.eval_only:
            return evaluate(args, checkpoint, dist, device)
        if not dist.is_main:  # rank 0 holds the output folder for all of them
            return train(args, checkpoint, dist, device)
        check_output_dir(args.output_dir)
        with claim_output_dir(args.output_dir):
            return train(args, checkpoint, dist, device)
    finally:
        shutdown_distributed(dist)


def evaluate(args: argparse.Namespace, checkpoint: dict | None, dist: Dist, device) -> int:
    """--eval-only: one line, the model's loss on all of --data (anything else goes to stderr)."""
    log = partial(print, file=sys.stderr)
    with dist.main_first():  # the text first: a bad --data is refused before any download
        tokens = load_tokens(args.data, get_tokenizer(), args.memmap or None, log)
    if len(tokens) < 2:
        raise DataError(f"{args.data}: too short: {len(tokens)} token, scoring needs 2")
    model, _ = start_model(args, checkpoint, dist, device, log)
    score = evaluate_tokens(model, tokens, batch_size=args.batch_size,
                            autocast=make_autocast(device, args.dtype))  # fmt: skip
    if dist.is_main:
        print(f"{score} of {shown_path(args.data)}")
    return 0


def train(args: argparse.Namespace, checkpoint: dict | None, dist: Dist, device) -> int:
    """The run: model, data, the training loop with its reports, then the plot and weights."""
    print0 = print if dist.is_main else lambda *a, **k: None
    allow_tf32(args.tf32)
    tokenizer = get_tokenizer()
    with dist.main_first():  # rank 0 tokenizes into the cache first; the others then read it
        corpus = load_corpus(args.data, tokenizer, args.train_ratio, args.memmap or None, print0)
    checks = partial(preflight, args, device, dist)
    model, origin = start_model(args, checkpoint, dist, device, print0, checks)
    train_windows, val_windows = windows(args, corpus, model.cfg, dist)
    show_model(model, origin, device, dist, print0)

    print0(banner("TRAINING OUR GPT MODEL"))
    print0(f"\nLoaded training data from: {shown_path(args.data)}")
    show_settings(args, checkpoint, device, print0)
    trainer = make_trainer(args, model, train_windows, val_windows, device, dist)
    if checkpoint:
        trainer.load_state_dict(checkpoint)
        print0(f"Resuming from {args.resume} at step {trainer.state.step} of {trainer.total_steps}")
    else:
        print0("Starting Training...")

    saved_flags = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    files = RunOutputs(args.output_dir, trainer, saved_flags)
    start = time.perf_counter()
    try:
        finished = run_training(args, trainer, tokenizer, dist, files)
    except NonFiniteError as e:
        advice = "lower --lr or set --grad-clip (--allow-nonfinite skips such steps)"
        raise NonFiniteError(f"{e}: {advice}; {files.last_saved()}") from None
    except RuntimeError as e:  # torch.OutOfMemoryError is one
        if not is_out_of_memory(e):
            raise
        raise out_of_memory_error(args, device, files) from None
    if not finished:
        return report_interrupted(trainer, files, dist)

    print0(banner("POST TRAINING OUTPUT"))
    print_sample(args, trainer, tokenizer, dist)
    print0(f"Training completed in {(time.perf_counter() - start) / 60:.2f} minutes.")
    if dist.is_main:
        weights, plot = files.save_results()  # first: they matter more than a checkpoint
        print(f"Loss plot saved to: {plot}")
        print(f"Model weights saved to: {weights}")
    if args.save_every:
        files.save_checkpoint("the final checkpoint")
        print0(f"Checkpoint saved to: {files.checkpoint_path}")
    return 0


def show_settings(args: argparse.Namespace, checkpoint: dict | None, device, print0) -> None:
    """What --dtype auto chose, and the settings a fine-tuning run defaults to."""
    if args.dtype == "auto":
        native = "native" if has_native_bfloat16(device) else "not native"
        print0(f"--dtype auto: {resolve_dtype(device, 'auto')} (bfloat16 is {native} on {device})")
    if args.init_from and not checkpoint:
        print0(f"Fine-tuning with lr {args.lr:g}, drop rate {args.drop_rate:g}, "
            f"weight decay {args.weight_decay:g}")  # fmt: skip


def make_trainer(
    args: argparse.Namespace,
    model: GPTModel,
    train_windows: TokenWindows,
    val_windows: TokenWindows,
    device,
    dist: Dist,
) -> Trainer:
    """AdamW, the compiled or DDP-wrapped model, and the loop that steps them."""
    optimizer = make_optimizer(model, args.lr, args.weight_decay, device, args.decay_matrices_only)
    net = wrap_for_training(model, device, dist, args.compile)
    return Trainer(
        net, optimizer, train_windows, val_windows, train_settings(args), device, dist,
        make_autocast(device, args.dtype),
    )  # fmt: skip


def out_of_memory_error(args: argparse.Namespace, device, files: RunOutputs) -> SaveError:
    """Out of memory mid-run: the same batch per step in smaller passes, and what was saved."""
    b, accum = args.batch_size, args.grad_accum
    smaller = f"--batch-size {max(1, b // 2)} --grad-accum {accum * 2}" if b > 1 else (
        "a smaller model or --context-length")  # fmt: skip
    return SaveError(
        f"out of memory on {device.type} at --batch-size {b}: try {smaller} "
        f"(the same batch per step); {files.last_saved()}"
    )


def report_interrupted(trainer: Trainer, files: RunOutputs, dist: Dist) -> int:
    """Ctrl-C or SIGTERM stopped the run: save its state and say how to continue."""
    path = files.save_checkpoint("the interrupted run's state")
    if dist.is_main:
        print(
            f"Interrupted after step {trainer.state.step} of {trainer.total_steps}; "
            f"checkpoint saved to {path}\nContinue with: --resume {path}",
            file=sys.stderr,
        )
    return 130


def start_model(
    args: argparse.Namespace,
    checkpoint: dict | None,
    dist: Dist,
    device,
    log: Callable,
    checks: Callable[[GPTConfig, bool], None] | None = None,
) -> tuple[GPTModel, str | None]:
    """The model to train or score: a checkpoint's (--resume), loaded weights (--init-from), or
    a new one; and where its weights came from. Fills in the shape flags from the weights.

    `checks(cfg, tied)` runs before a new model is built, or once the weights are loaded.
    """
    checks = checks or (lambda cfg, tied: None)
    torch.manual_seed(args.seed + dist.rank)  # rank 0 as a single process; DDP copies its weights
    if checkpoint:
        cfg = GPTConfig(**checkpoint["config"])
        changed = [f"--{k.replace('_', '-')} {getattr(cfg, k)}, not {getattr(args, k)}"
                   for k in SHAPE_FLAGS if getattr(args, k) != getattr(cfg, k)]  # fmt: skip
        if changed:
            raise UserError(f"--resume: the checkpoint's model has {'; '.join(changed)}")
        model = model_from_state(replace(cfg, drop_rate=args.drop_rate), checkpoint["model"])
        checks(model.cfg, model.is_tied)
        return model.to(device), str(args.resume)
    if not args.init_from:
        cfg = model_config(args, get_tokenizer().n_vocab)
        checks(cfg, False)
        return GPTModel(cfg).to(device), None
    if expected := source_config(args.init_from):  # a GPT-2 size: refuse before downloading
        check_shape(args, expected)
    with dist.main_first():  # rank 0 downloads or converts first; the others then read it
        model, origin = load_weights(args.init_from, device, download_settings(args), log)
    check_shape(args, model.cfg)
    args.context_length = args.context_length or model.cfg.context_length
    for name in SHAPE_FLAGS[1:]:  # saved with a checkpoint: --resume then checks them
        setattr(args, name, getattr(model.cfg, name))
    model = reshaped(model, args.context_length, args.drop_rate)
    checks(model.cfg, model.is_tied)
    return model, origin


def preflight(args: argparse.Namespace, device, dist: Dist, cfg: GPTConfig, tied: bool) -> None:
    """Room on disk for the run's files and in memory for its training steps, or a UserError."""
    n_params = n_parameters(cfg, tied)
    if not args.no_memory_check:
        check_memory(cfg, n_params, args.batch_size, resolve_dtype(device, args.dtype), device)
    if dist.is_main:
        check_disk(args.output_dir, n_params, checkpoints=bool(args.save_every))


def check_shape(args: argparse.Namespace, cfg: GPTConfig) -> None:
    """The shape flags given with --init-from must agree with the weights' shape."""
    conflicts = [
        f"--{name.replace('_', '-')} {getattr(args, name)}, the weights have {getattr(cfg, name)}"
        for name in SHAPE_FLAGS[1:]
        if getattr(args, name) is not None and getattr(args, name) != getattr(cfg, name)
    ]
    if args.context_length and args.context_length > cfg.context_length:
        conflicts.append(
            f"--context-length {args.context_length} is longer than the weights' "
            f"{cfg.context_length} positions"
        )
    if conflicts:
        raise UserError(f"--init-from {args.init_from}: {'; '.join(conflicts)}")


def model_config(args: argparse.Namespace, vocab_size: int) -> GPTConfig:
    return GPTConfig(
        vocab_size=vocab_size,
        context_length=args.context_length,
        emb_dim=args.emb_dim,
        n_heads=args.n_heads,
        n_layers=args.n_layers,
        drop_rate=args.drop_rate,
        qkv_bias=args.qkv_bias,
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
    print0(f"({model.num_parameters():,} parameters, on {device.type}{processes})\n")


def shown_path(path: Path) -> str | Path:
    return os.path.relpath(path) if path == DEFAULT_DATA else path


def train_settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        lr_decay=args.lr_decay,
        min_lr=args.min_lr,
        weight_decay=args.weight_decay,
        decay_matrices_only=args.decay_matrices_only,
        grad_clip=args.grad_clip,
        eval_freq=args.eval_freq,
        eval_iter=args.eval_iter,
        allow_nonfinite=args.allow_nonfinite,
    )


def windows(
    args: argparse.Namespace, corpus: Corpus, cfg: GPTConfig, dist: Dist
) -> tuple[TokenWindows, TokenWindows]:
    """Training and validation windows of the model's context length over --data's tokens."""
    global_batch = args.batch_size * args.grad_accum * dist.world_size
    try:
        return corpus.windows(cfg.context_length, args.stride or cfg.context_length, global_batch)
    except DataError as e:  # too short: name the data
        raise DataError(f"{args.data}: {e}") from None


def run_training(
    args: argparse.Namespace, trainer: Trainer, tokenizer, dist: Dist, files: RunOutputs
) -> bool:
    """Trainer.run with the book's reports; False if Ctrl-C stopped it first."""

    def on_step(state: TrainState, lr: float, grad_norm) -> None:
        bar.update()
        if dist.is_main and trainer.skipped_steps and trainer.skipped_steps[-1] == state.step - 1:
            tqdm.write(f"warning: step {state.step - 1} skipped: its loss or gradient norm is "
                       f"not finite (--allow-nonfinite)", file=sys.stderr)  # fmt: skip
        if args.sample_every and state.step % args.sample_every == 0:
            print_sample(args, trainer, tokenizer, dist)

    def on_eval(state: TrainState, train_loss: float, val_loss: float) -> None:
        if dist.is_main:
            tqdm.write(progress_line(state.epoch, state.step - 1, train_loss, val_loss))

    # The bar lives on stderr and only on a terminal; tqdm.write keeps it below the printed lines.
    with (
        tqdm(
            total=trainer.total_steps, initial=trainer.state.step, unit="step", leave=False,
            disable=None if dist.is_main else True,
        ) as bar,
        GracefulStop() as stop,
    ):  # fmt: skip
        return trainer.run(
            on_step=on_step,
            on_eval=on_eval,
            on_epoch_end=lambda state: print_sample(args, trainer, tokenizer, dist),
            on_save=files.save_periodic,
            save_every=args.save_every,
            stop=stop,
        )


def print_sample(args: argparse.Namespace, trainer: Trainer, tokenizer, dist: Dist) -> None:
    """A greedy completion of --start-context, on one line."""
    if dist.is_main:
        with trainer.autocast():
            tqdm.write(sample_line(trainer.gpt, tokenizer, args.start_context, args.sample_tokens))


if __name__ == "__main__":
    run_main(main)
