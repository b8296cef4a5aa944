"""Train a GPT-2 124M-shape model from scratch on the-verdict.txt and print samples as it learns."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from mygpt import (
    GPTConfig,
    GPTModel,
    UserError,
    complete_text,
    get_tokenizer,
    make_optimizer,
    read_text,
    save_model,
    train_model,
    train_val_loaders,
)
from mygpt.cli import banner, positive_int, run_main
from mygpt.devices import DEVICE_CHOICES, pick_device
from mygpt.errors import DataError
from mygpt.plot import plot_losses

DEFAULT_DATA = Path(__file__).with_name("the-verdict.txt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="UTF-8 training text")
    p.add_argument("--epochs", type=positive_int, default=10, help="passes over the training set")
    p.add_argument(
        "--output-dir", type=Path, default=Path("."), help="where the plot and weights go"
    )
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto: cuda, mps, cpu")
    p.add_argument("--seed", type=int, default=123, help="seeds data order, weights and dropout")
    p.add_argument("--batch-size", type=positive_int, default=2)
    p.add_argument("--context-length", type=positive_int, default=256, help="tokens per window")
    p.add_argument("--stride", type=positive_int, help="window step (default: context length)")
    p.add_argument("--emb-dim", type=positive_int, default=768)
    p.add_argument("--n-layers", type=positive_int, default=12)
    p.add_argument("--n-heads", type=positive_int, default=12)
    p.add_argument("--drop-rate", type=float, default=0.1)
    p.add_argument("--qkv-bias", action="store_true", help="biases on query/key/value")
    p.add_argument("--lr", type=float, default=4e-4, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    p.add_argument("--train-ratio", type=float, default=0.9, help="share of text for training")
    p.add_argument("--eval-freq", type=positive_int, default=5, help="evaluate every N steps")
    p.add_argument("--eval-iter", type=positive_int, default=5, help="batches per loss estimate")
    p.add_argument("--start-context", default="Every effort moves you", help="sample prompt")
    p.add_argument("--sample-tokens", type=positive_int, default=50, help="tokens per sample")
    args = p.parse_args(argv)
    if not 0.0 < args.train_ratio < 1.0:
        p.error("--train-ratio must be between 0 and 1")
    if args.emb_dim % args.n_heads:  # both are positive: positive_int saw to that
        p.error(f"--emb-dim {args.emb_dim} must be divisible by --n-heads {args.n_heads}")
    if not 0.0 <= args.drop_rate < 1.0:
        p.error("--drop-rate must be in [0, 1)")
    if args.lr <= 0:
        p.error("--lr must be positive")
    return args


def main() -> None:
    args = parse_args()
    device = pick_device(args.device)
    cfg = GPTConfig(
        vocab_size=50257,
        context_length=args.context_length,
        emb_dim=args.emb_dim,
        n_heads=args.n_heads,
        n_layers=args.n_layers,
        drop_rate=args.drop_rate,
        qkv_bias=args.qkv_bias,
    )
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise UserError(f"--output-dir {args.output_dir}: exists and is not a directory")
    shown_data = os.path.relpath(args.data) if args.data == DEFAULT_DATA else args.data
    tokenizer = get_tokenizer()
    try:
        text = read_text(args.data)
        torch.manual_seed(args.seed)
        train_loader, val_loader = train_val_loaders(
            text,
            batch_size=args.batch_size,
            max_length=cfg.context_length,
            stride=args.stride or cfg.context_length,
            train_ratio=args.train_ratio,
            tokenizer=tokenizer,
        )
    except DataError as e:
        raise DataError(f"{args.data}: {e}") from None

    torch.manual_seed(args.seed)
    model = GPTModel(cfg).to(device)
    print(banner("UNTRAINED GPT MODEL"))
    print("\nUntrained model created with the following configuration:")
    for name, value in asdict(cfg).items():
        print(f"- {name}: {value}")
    print(f"({model.num_parameters():,} parameters, on {device})\n")

    print(banner("TRAINING OUR GPT MODEL"))
    print(f"\nLoaded training data from: {shown_data}")
    print("Starting Training...")
    optimizer = make_optimizer(model, args.lr, args.weight_decay, device)

    def sample() -> str:
        text = complete_text(model, tokenizer, args.start_context, args.sample_tokens)
        return ">>> " + text.replace("\n", " ")

    start = time.perf_counter()
    # The bar lives on stderr and only on a terminal; tqdm.write keeps it below the printed lines.
    with tqdm(total=args.epochs * len(train_loader), unit="step", leave=False, disable=None) as bar:
        history = train_model(
            model,
            train_loader,
            val_loader,
            optimizer,
            device,
            num_epochs=args.epochs,
            eval_freq=args.eval_freq,
            eval_iter=args.eval_iter,
            on_step=lambda epoch, step: bar.update(),
            on_eval=lambda epoch, step, train_loss, val_loss: tqdm.write(
                f"Ep {epoch} (Step {step:06d}): "
                f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
            ),
            on_epoch_end=lambda epoch: tqdm.write(sample()),
        )
    print(banner("POST TRAINING OUTPUT"))
    print(sample())
    print(f"Training completed in {(time.perf_counter() - start) / 60:.2f} minutes.")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_losses(
        args.epochs,
        history.tokens_seen,
        history.train_losses,
        history.val_losses,
        args.output_dir / "loss-plot.png",
    )
    weights = save_model(model, args.output_dir / "model.safetensors")
    print(f"Loss plot saved to: {plot}")
    print(f"Model weights saved to: {weights}")


if __name__ == "__main__":
    run_main(main)
