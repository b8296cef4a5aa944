"""Where greedy generation's time goes: torch.profiler over MyGPT's KV-cache decoding.

uv run python bench/profile_generation.py                    # GPT-2 124M, 50 new tokens
uv run python bench/profile_generation.py --precision int8   # with int8 weights
"""

from __future__ import annotations

import argparse

import compare_llamacpp
import torch
from compare_hf import copy_bandwidth
from torch.profiler import ProfilerActivity, profile

from mygpt import GPTModel, for_inference, generate, gpt2_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new-tokens", type=int, default=50)
    p.add_argument("--rows", type=int, default=12, help="operators to list")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "int8"))
    args = p.parse_args()
    torch.manual_seed(0)
    model = GPTModel(gpt2_config("124M", qkv_bias=True)).eval()
    model = for_inference(model.tie_weights(), args.precision)  # tied, as GPT-2's weights are
    prompt = torch.tensor([[6109, 3626, 6100, 345]])  # "Every effort moves you"
    generate(model, prompt, 5)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(model, prompt, args.new_tokens)
    ops = prof.key_averages()
    print(ops.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    total = sum(op.self_cpu_time_total for op in ops) / 1e6  # seconds
    kernels = ("mkldnn::_linear_pointwise", "aten::_int_mm", "aten::mm", "aten::addmm")
    matmul = sum(op.self_cpu_time_total for op in ops if op.key in kernels) / 1e6
    weight_bytes = compare_llamacpp.weight_bytes(model)
    per_token = matmul / args.new_tokens
    print(
        f"{args.new_tokens / total:.1f} tokens/s of operator time; matrix products "
        f"{matmul / total:.0%} of it, {per_token * 1e3:.1f} ms a token: the weights "
        f"({weight_bytes / 1e6:.0f} MB) stream at {weight_bytes / per_token / 1e9:.1f} GB/s; "
        f"a large tensor copy moves {copy_bandwidth() / 1e9:.1f} GB/s (read + write)"
    )


if __name__ == "__main__":
    main()
