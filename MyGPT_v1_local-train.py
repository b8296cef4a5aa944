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
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from mygpt import (
    GPTConfig,
    GPTModel,
    TokenWindows,
    UserError,
    complete_text,
    get_tokenizer,
    save_model,
)
from mygpt.checkpoint import load_checkpoint, save_checkpoint
from mygpt.cli import GracefulStop, add_device_flags, banner, positive_int, run_main
from mygpt.corpus import IN_MEMORY_LIMIT, load_corpus
from mygpt.devices import allow_tf32, autocast, pick_device
from mygpt.distributed import Dist, init_distributed, shutdown_distributed
from mygpt.errors import DataError
from mygpt.plot import plot_losses
from mygpt.train import Trainer, TrainSettings, make_optimizer

DEFAULT_DATA = Path(__file__).with_name("the-verdict.txt")
# What a checkpoint may not change on resume: the model's shape.
SHAPE_FLAGS = ("context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="a UTF-8 text file or a folder of .txt"
    )
    data.add_argument("--train-ratio", type=float, default=0.9, help="share for training")
    data.add_argument(
        "--memmap",
        action="store_true",
        help="tokenize into a uint16 file beside the data and memory-map it "
        f"(automatic above {IN_MEMORY_LIMIT // 2**20} MB)",
    )
    data.add_argument("--stride", type=positive_int, help="window step (default: context length)")

    model = p.add_argument_group("model")
    model.add_argument("--context-length", type=positive_int, default=256, help="tokens/window")
    model.add_argument("--emb-dim", type=positive_int, default=768)
    model.add_argument("--n-layers", type=positive_int, default=12)
    model.add_argument("--n-heads", type=positive_int, default=12)
    model.add_argument("--drop-rate", type=float, default=0.1)
    model.add_argument("--qkv-bias", action="store_true", help="biases on query/key/value")

    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=10, help="passes over the data")
    train.add_argument("--max-steps", type=positive_int, help="optimizer steps, instead of epochs")
    train.add_argument("--batch-size", type=positive_int, default=2, help="windows per process")
    train.add_argument("--grad-accum", type=positive_int, default=1, help="passes per step")
    train.add_argument("--lr", type=float, default=4e-4, help="AdamW (peak) learning rate")
    train.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up")
    train.add_argument("--lr-decay", default="constant", choices=("constant", "cosine"))
    train.add_argument("--min-lr", type=float, help="end of cosine decay (default: lr / 10)")
    train.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    train.add_argument(
        "--decay-matrices-only", action="store_true", help="no decay on biases and norms"
    )
    train.add_argument("--grad-clip", type=float, help="clip the global gradient norm to this")
    train.add_argument("--seed", type=int, default=123, help="seeds data order, weights, dropout")

    report = p.add_argument_group("evaluation, samples and files")
    report.add_argument("--eval-freq", type=positive_int, default=5, help="evaluate every N steps")
    report.add_argument("--eval-iter", type=positive_int, default=5, help="batches per estimate")
    report.add_argument("--start-context", default="Every effort moves you", help="sample prompt")
    report.add_argument("--sample-tokens", type=positive_int, default=50, help="tokens/sample")
    report.add_argument(
        "--sample-every", type=int, default=0, help="also sample every N steps (0: epochs only)"
    )
    report.add_argument(
        "--output-dir", type=Path, default=Path("."), help="where plot, weights, checkpoint go"
    )
    report.add_argument(
        "--save-every", type=int, default=0, help="checkpoint every N steps and at the end"
    )
    report.add_argument("--resume", type=Path, help="continue from this checkpoint")

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
        args = p.parse_args(argv)
        args.data, args.output_dir = Path(args.data), Path(args.output_dir)  # saved as text
    if not 0.0 < args.train_ratio < 1.0:
        p.error("--train-ratio must be between 0 and 1")
    if args.emb_dim % args.n_heads:  # both are positive: positive_int saw to that
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
        return train(args, checkpoint, dist, device)
    finally:
        shutdown_distributed(dist)


def model_config(args: argparse.Namespace) -> GPTConfig:
    return GPTConfig(
        vocab_size=50257,
        context_length=args.context_length,
        emb_dim=args.emb_dim,
        n_heads=args.n_heads,
        n_layers=args.n_layers,
        drop_rate=args.drop_rate,
        qkv_bias=args.qkv_bias,
    )


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
    )


def load_windows(
    args: argparse.Namespace, cfg: GPTConfig, tokenizer, dist: Dist, say: Callable
) -> tuple[TokenWindows, TokenWindows]:
    """Training and validation windows of --data; rank 0 makes any token file first."""
    if not dist.is_main:
        dist.barrier()  # rank 0 tokenizes into the cache first; the others then read it
    try:
        corpus = load_corpus(args.data, tokenizer, args.train_ratio, args.memmap or None, say)
    finally:
        if dist.is_main:
            dist.barrier()
    global_batch = args.batch_size * args.grad_accum * dist.world_size
    try:
        return corpus.windows(cfg.context_length, args.stride or cfg.context_length, global_batch)
    except DataError as e:  # too short: say which data
        raise DataError(f"{args.data}: {e}") from None


def train(args: argparse.Namespace, checkpoint: dict | None, dist: Dist, device) -> int:
    say = print if dist.is_main else lambda *a, **k: None
    cfg = model_config(args)
    if checkpoint:
        changed = [f"--{k.replace('_', '-')} {checkpoint['config'][k]}, not {getattr(cfg, k)}"
                   for k in SHAPE_FLAGS if checkpoint["config"][k] != getattr(cfg, k)]  # fmt: skip
        if changed:
            raise UserError(f"--resume: the checkpoint's model has {'; '.join(changed)}")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise UserError(f"--output-dir {args.output_dir}: exists and is not a directory")
    allow_tf32(args.tf32)
    tokenizer = get_tokenizer()
    train_windows, val_windows = load_windows(args, cfg, tokenizer, dist, say)

    torch.manual_seed(args.seed + dist.rank)  # rank 0 as a single process; DDP copies its weights
    model = GPTModel(cfg).to(device)
    say(banner("UNTRAINED GPT MODEL"))
    say("\nUntrained model created with the following configuration:")
    for name, value in asdict(cfg).items():
        say(f"- {name}: {value}")
    processes = f", {dist.world_size} processes" if dist.enabled else ""
    say(f"({model.num_parameters():,} parameters, on {device.type}{processes})\n")

    say(banner("TRAINING OUR GPT MODEL"))
    shown_data = os.path.relpath(args.data) if args.data == DEFAULT_DATA else args.data
    say(f"\nLoaded training data from: {shown_data}")
    optimizer = make_optimizer(model, args.lr, args.weight_decay, device, args.decay_matrices_only)
    trainer = Trainer(
        model, optimizer, train_windows, val_windows, train_settings(args), device, dist,
        autocast(device, args.dtype), args.compile,
    )  # fmt: skip
    if checkpoint:
        trainer.load_state_dict(checkpoint)
        say(f"Resuming from {args.resume} at step {trainer.state.step} of {trainer.total_steps}")
    else:
        say("Starting Training...")

    def sample() -> None:
        if dist.is_main:
            with trainer.autocast():
                text = complete_text(model, tokenizer, args.start_context, args.sample_tokens)
            tqdm.write(">>> " + text.replace("\n", " "))

    saved_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    checkpoint_path = args.output_dir / "checkpoint.pt"

    def save() -> Path:
        state = trainer.state_dict()  # every process takes part: it gathers their RNG states
        if dist.is_main:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint({**state, "args": saved_args}, checkpoint_path)
        return checkpoint_path

    def on_step(st) -> None:
        bar.update()
        if args.sample_every and st.step % args.sample_every == 0:
            sample()

    def on_eval(st, train_loss: float, val_loss: float) -> None:
        if dist.is_main:
            tqdm.write(
                f"Ep {st.epoch} (Step {st.step - 1:06d}): "
                f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
            )

    start = time.perf_counter()
    # The bar lives on stderr and only on a terminal; tqdm.write keeps it below the printed lines.
    with (
        tqdm(
            total=trainer.total_steps, initial=trainer.state.step, unit="step", leave=False,
            disable=None if dist.is_main else True,
        ) as bar,
        GracefulStop() as stop,
    ):  # fmt: skip
        finished = trainer.run(
            on_step=on_step,
            on_eval=on_eval,
            on_epoch_end=lambda st: sample(),
            on_save=save,
            save_every=args.save_every,
            stop=stop,
        )  # fmt: skip
    if not finished:
        path = save()
        if dist.is_main:
            print(
                f"Interrupted after step {trainer.state.step} of {trainer.total_steps}; "
                f"checkpoint saved to {path}\nContinue with: --resume {path}",
                file=sys.stderr,
            )
        return 130

    say(banner("POST TRAINING OUTPUT"))
    sample()
    say(f"Training completed in {(time.perf_counter() - start) / 60:.2f} minutes.")
    if args.save_every:
        save()
    if dist.is_main:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        st = trainer.state
        epochs = (
            args.epochs if not args.max_steps else trainer.total_steps / trainer.steps_per_epoch
        )
        plot = plot_losses(
            epochs, st.eval_tokens_seen, st.train_losses, st.val_losses,
            args.output_dir / "loss-plot.png",
        )  # fmt: skip
        weights = save_model(model, args.output_dir / "model.safetensors")
        say(f"Loss plot saved to: {plot}")
        say(f"Model weights saved to: {weights}")
        if args.save_every:
            say(f"Checkpoint saved to: {checkpoint_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
