"""Where a training step's time goes: torch.profiler over MyGPT's v1 step, float32 or bfloat16.

uv run python bench/profile_training.py --dtype bfloat16   # GPT-2 124M shape, 2 x 256 tokens
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from mygpt import GPTConfig, GPTModel, make_optimizer
from mygpt.devices import make_autocast


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--rows", type=int, default=12, help="operators to list")
    args = p.parse_args()
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(context_length=256)).train()  # v1's shape
    optimizer = make_optimizer(model, 4e-4, 0.1, "cpu")
    x, y = torch.randint(0, 50257, (2, 2, 256))
    autocast = make_autocast(torch.device("cpu"), args.dtype)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
