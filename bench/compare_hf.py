"""MyGPT beside Hugging Face transformers' GPT2LMHeadModel: same machine, run, weights, settings.

    uv run python bench/compare_hf.py            # GPT-2 124M shapes (several minutes on a CPU)
    uv run python bench/compare_hf.py --quick    # a small shape, under a minute: a smoke test

Timings alternate the two implementations and report the median of the repeats. Results are
printed as a table and written as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mygpt import GPTConfig, GPTModel, for_inference, generate, make_optimizer  # noqa: E402
from mygpt.devices import make_autocast  # noqa: E402
from mygpt.io.gpt2.convert import _hf_params, gpt2_from_params  # noqa: E402


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    n_head: int
    n_ctx: int
    train_batch: tuple[int, int]  # (B, T) of a training step
    forward_batch: tuple[int, int]  # (B, T) of the no-grad forward
    new_tokens: int  # greedy generation after a 4-token prompt
    steps: int  # timed training steps (after one warm-up step)
    repeats: int


FULL = Shape(12, 768, 12, 1024, (2, 256), (8, 1024), 200, 3, 3)
QUICK = Shape(2, 128, 4, 256, (2, 64), (2, 256), 40, 2, 2)


def make_pair(shape: Shape, tied: bool, drop: float) -> tuple[GPTModel, GPT2LMHeadModel]:
    """A transformers GPT-2 with random weights and a MyGPT model holding the same weights."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50257,
        n_positions=shape.n_ctx,
        n_embd=shape.n_embd,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        tie_word_embeddings=tied,
        resid_pdrop=drop,
        embd_pdrop=drop,
        attn_pdrop=drop,
    )
    hf = GPT2LMHeadModel(config)
    params = _hf_params({k: v.detach().numpy() for k, v in hf.transformer.state_dict().items()})
    hparams = {
        "n_vocab": 50257,
        "n_ctx": shape.n_ctx,
        "n_embd": shape.n_embd,
        "n_head": shape.n_head,
        "n_layer": shape.n_layer,
    }
    loaded = gpt2_from_params(params, hparams)
    ours = GPTModel(replace(loaded.cfg, drop_rate=drop))
    state = dict(loaded.state_dict())
    if not tied:
        state["out_head.weight"] = hf.lm_head.weight.detach().clone()
    else:
        ours.tie_weights()
    ours.load_state_dict(state)
    return ours, hf


def logits_of(model, idx):
    out = model(idx)
    return out.logits if hasattr(out, "logits") else out


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / timed(lambda: a @ b, 5)


def copy_bandwidth(n_bytes: int = 512 << 20) -> float:
    """Bytes moved per second (read + write) by a large tensor copy."""
    src = torch.empty(n_bytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * n_bytes / timed(lambda: dst.copy_(src), 5)


def train_step_fn(model, optimizer, batch):
    x, y = batch

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(logits_of(model, x).flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()

    return step


def bench_training(shape: Shape) -> dict:
    ours, hf = make_pair(shape, tied=False, drop=0.1)  # the v1 shape: separate output head
    B, T = shape.train_batch
    x, y = torch.randint(0, 50257, (2, B, T))
    float32_step = train_step_fn(ours.train(), make_optimizer(ours, 4e-4, 0.1, "cpu"), (x, y))
    bf16 = make_autocast(torch.device("cpu"), "bfloat16")

    def bf16_step():
        with bf16():
            float32_step()

    steps = {
        "MyGPT": float32_step,
        "MyGPT bfloat16 autocast": bf16_step,
        "transformers": train_step_fn(
            hf.train(), torch.optim.AdamW(hf.parameters(), lr=4e-4, weight_decay=0.1), (x, y)
        ),
    }
    for step in steps.values():
        step()  # warm-up
    times = {name: [] for name in steps}
    for _ in range(shape.steps):
        for name, step in steps.items():
            times[name].append(timed(step, 1))
    # Matmul weights only: the embedding lookups cost no FLOPs (the untied head is counted).
    embeddings = ours.pos_emb.weight.numel() + ours.tok_emb.weight.numel()
    n_params = sum(p.numel() for p in ours.parameters()) - embeddings
    flops_per_token = 6 * n_params + 12 * shape.n_layer * shape.n_embd * T
    peak = matmul_flops()
    out = {}
    for name, ts in times.items():
        tps = B * T / statistics.median(ts)
        out[name] = {"tokens_per_s": tps, "mfu": tps * flops_per_token / peak}
    out["matmul_flops"] = peak
    return out


def bench_generation(shape: Shape) -> dict:
    ours, hf = make_pair(shape, tied=True, drop=0.0)
    ours.eval()
    hf.eval()
    prompt = torch.tensor([[6109, 3626, 6100, 345]])  # "Every effort moves you"
    n = shape.new_tokens
    bf16, int8 = for_inference(ours, "bfloat16"), for_inference(ours, "int8")
    runs = {
        "MyGPT": lambda: generate(ours, prompt, n),
        "MyGPT bfloat16": lambda: generate(bf16, prompt, n),
        "MyGPT int8": lambda: generate(int8, prompt, n),
        "MyGPT (no cache)": lambda: generate(ours, prompt, n, use_cache=False),
        "transformers": lambda: hf.generate(
            prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=50256
        ),
    }
    with torch.no_grad():
        outputs = {name: run() for name, run in runs.items()}  # warm-up, and the same text?
        exact = ("MyGPT", "MyGPT (no cache)", "transformers")  # float32: the same tokens
        same = all(torch.equal(outputs[k][:, : 4 + n], outputs["MyGPT"]) for k in exact)
        agree = {  # random weights: near-ties make this a lower bound of a trained model's
            k: (outputs[k][0, 4:] == outputs["MyGPT"][0, 4:]).float().mean().item()
            for k in ("MyGPT bfloat16", "MyGPT int8")
        }
        times = {name: [] for name in runs}
        for _ in range(shape.repeats):
            for name, run in runs.items():
                times[name].append(timed(run, 1))
    model_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    bandwidth = copy_bandwidth()
    out = {name: {"tokens_per_s": n / statistics.median(ts)} for name, ts in times.items()}
    out["bandwidth_bound_tokens_per_s"] = bandwidth / model_bytes
    out["same_tokens"] = same
    out["share_of_float32_tokens"] = agree
    return out


def bench_forward(shape: Shape) -> dict:
    ours, hf = make_pair(shape, tied=True, drop=0.0)
    B, T = shape.forward_batch
    x = torch.randint(0, 50257, (B, T))
    models = {"MyGPT": ours.eval(), "transformers": hf.eval()}
    with torch.no_grad():
        diff = (logits_of(ours, x[:1, :64]) - logits_of(hf, x[:1, :64])).abs().max().item()
        times = {name: [] for name in models}
        for _ in range(shape.repeats):
            for name, model in models.items():
                times[name].append(timed(lambda m=model: logits_of(m, x), 1))
    out = {name: {"tokens_per_s": B * T / statistics.median(ts)} for name, ts in times.items()}
    out["max_logit_diff"] = diff
    return out


def peak_memory_child(impl: str, quick: bool) -> None:
    """In a fresh process: one training step of one implementation; print the peak RSS."""
    shape = QUICK if quick else FULL
    torch.manual_seed(0)
    if impl == "MyGPT":
        model = GPTModel(
            GPTConfig(
                context_length=shape.n_ctx,
                emb_dim=shape.n_embd,
                n_heads=shape.n_head,
                n_layers=shape.n_layer,
                drop_rate=0.1,
                qkv_bias=True,
            )
        )
    else:
        model = GPT2LMHeadModel(
            GPT2Config(
                n_positions=shape.n_ctx,
                n_embd=shape.n_embd,
                n_layer=shape.n_layer,
                n_head=shape.n_head,
                tie_word_embeddings=False,
            )
        )
    B, T = shape.train_batch
    x, y = torch.randint(0, 50257, (2, B, T))
    if impl == "MyGPT":
        optimizer = make_optimizer(model, 4e-4, 0.1, "cpu")
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    step = train_step_fn(model.train(), optimizer, (x, y))
    step()
    step()
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (Linux keeps it
    # across fork), which would report the bench process itself.
    status = Path("/proc/self/status").read_text()
    print(
        int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
        * 1024
    )


def peak_memory(quick: bool) -> dict:
    """Peak RSS of each implementation, each in its own fresh process (run side by side)."""
    children = {
        impl: subprocess.Popen(
            [sys.executable, __file__, "--peak-memory-child", impl] + ["--quick"] * quick,
            stdout=subprocess.PIPE,
            text=True,
        )
        for impl in ("MyGPT", "transformers")
    }
    out = {}
    for impl, child in children.items():
        stdout, _ = child.communicate()
        if child.returncode:
            raise RuntimeError(f"the peak-memory child for {impl} failed")
        out[impl] = {"peak_rss_bytes": int(stdout.split()[-1])}
    return out


def startup(shape: Shape) -> dict:
    from v2_startup import measure

    dims = [shape.n_layer, shape.n_embd, shape.n_head, shape.n_ctx]
    first, later = measure(dims, runs=shape.repeats)
    return {"MyGPT": {"first_run_s": first, "later_run_s": statistics.median(later)}}


def row(label: str, ours: float, theirs: float | None, fmt: str = "{:,.1f}") -> str:
    ratio = f"{ours / theirs:.2f}x" if theirs else "-"
    theirs_text = fmt.format(theirs) if theirs else "-"
    return f"| {label} | {fmt.format(ours)} | {theirs_text} | {ratio} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shape, for a smoke test")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    p.add_argument("--skip-startup", action="store_true", help="skip the v2 start-up timing")
    p.add_argument("--peak-memory-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peak_memory_child:
        peak_memory_child(args.peak_memory_child, args.quick)
        return
    shape = QUICK if args.quick else FULL
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "shape": shape.__dict__,
        "training": bench_training(shape),
        "generation": bench_generation(shape),
        "forward": bench_forward(shape),
        "peak_memory": peak_memory(args.quick),
    }
    if not args.skip_startup:
        results["startup"] = startup(shape)
    args.json.write_text(json.dumps(results, indent=2))

    t, g, f, m = (results[k] for k in ("training", "generation", "forward", "peak_memory"))
    B, T = shape.train_batch
    lines = [
        "| CPU (peer: transformers float32 unless the row says) | MyGPT | peer | ratio |",
        "| --- | --- | --- | --- |",
        row(
            f"training tokens/s ({B} x {T}, AdamW)",
            t["MyGPT"]["tokens_per_s"],
            t["transformers"]["tokens_per_s"],
        ),
        row("training MFU (%)", 100 * t["MyGPT"]["mfu"], 100 * t["transformers"]["mfu"]),
        row(
            f"training tokens/s, bfloat16 autocast (peer: MyGPT float32, {B} x {T})",
            t["MyGPT bfloat16 autocast"]["tokens_per_s"],
            t["MyGPT"]["tokens_per_s"],
        ),
        *[
            row(
                f"greedy generation tokens/s, {name} ({shape.new_tokens} new, cache)",
                g[name]["tokens_per_s"],
                g["transformers"]["tokens_per_s"],
            )
            for name in ("MyGPT", "MyGPT bfloat16", "MyGPT int8")
        ],
        row(
            "generation without cache (MyGPT) tokens/s", g["MyGPT (no cache)"]["tokens_per_s"], None
        ),
        row("memory-bandwidth bound tokens/s", g["bandwidth_bound_tokens_per_s"], None),
        row(
            "forward tokens/s ({} x {}, no grad)".format(*shape.forward_batch),
            f["MyGPT"]["tokens_per_s"],
            f["transformers"]["tokens_per_s"],
        ),
        row(
            "peak memory of a training step (MiB)",
            m["MyGPT"]["peak_rss_bytes"] / 2**20,
            m["transformers"]["peak_rss_bytes"] / 2**20,
            "{:,.0f}",
        ),
    ]
    if "startup" in results:
        s = results["startup"]["MyGPT"]
        lines.append(
            row("v2 start to first prompt, first run (s)", s["first_run_s"], None, "{:.2f}")
        )
        lines.append(
            row("v2 start to first prompt, later runs (s)", s["later_run_s"], None, "{:.2f}")
        )
    print("\n".join(lines))
    print(
        f"generation: same tokens from the float32 three: {g['same_tokens']}; "
        f"share of float32's tokens: {g['share_of_float32_tokens']}; "
        f"MyGPT at {g['MyGPT']['tokens_per_s'] / g['bandwidth_bound_tokens_per_s']:.0%} "
        f"of the bandwidth bound; forward max logit diff {f['max_logit_diff']:.2e}; "
        f"matmul {t['matmul_flops'] / 1e9:.0f} GFLOP/s; JSON: {args.json}"
    )


if __name__ == "__main__":
    main()
