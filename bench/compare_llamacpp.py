"""MyGPT beside llama.cpp on this CPU: batch-1 generation and a 512-token prompt, per precision.

    uv run python bench/compare_llamacpp.py                   # GPT-2 124M and 355M shapes
    uv run python bench/compare_llamacpp.py --sizes 124M --repeats 5
    uv run python bench/compare_llamacpp.py --quick           # a small shape: a smoke test

The same random weights (GPT-2's shape, tied head, biases) go to MyGPT's `for_inference` copy and,
through MyGPT's GGUF exporter, to llama.cpp's `llama-bench` (built once, bench/llamacpp.py):
float32 beside F32, bfloat16 beside BF16, int8 beside Q8_0. Each repeat runs every measurement
once, alternating the two, so a noisy spell hits both; the table shows medians. Generation is
greedy from one token, as llama-bench's tg is; the prompt is processed with the cache, the head
run for its last position. The bound is what reading the weights once a token costs at the
read bandwidth PyTorch reaches here (a sum over 1 GB; llama.cpp streams faster on some CPUs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import llamacpp  # noqa: E402 (bench/ is not a package)

from mygpt import GPTConfig, GPTModel, export_gguf, for_inference, generate, gpt2_config  # noqa: E402
from mygpt.devices import cpu_identity  # noqa: E402
from mygpt.inference.fast import compile_for_generation  # noqa: E402

PAIRS = {"float32": "f32", "bfloat16": "bf16", "int8": "q8_0"}  # MyGPT's precision: GGUF's
QUICK = GPTConfig(context_length=1024, emb_dim=128, n_heads=4, n_layers=2, qkv_bias=True)


def cpu_line() -> str:
    """lscpu's model name and the flags that decide the kernels."""
    name, flags = cpu_identity()
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    return f"{name}; {' '.join(f for f in wanted if f in flags) or 'no AVX2'}"


def read_bandwidth(n_bytes: int = 1 << 30) -> float:
    """Bytes per second read by summing a tensor much larger than the caches (median of 5)."""
    x = torch.ones(n_bytes // 4)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return n_bytes / statistics.median(times[1:])


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a token reads: every matrix of a Linear layer (the head included) and its scales;
    the embeddings give one row each, nothing to count."""
    linears = [m for m in model.modules() if hasattr(m, "weight") and m.weight.dim() == 2]
    linears = [m for m in linears if not isinstance(m, torch.nn.Embedding)]
    return sum(t.numel() * t.element_size() for m in linears for t in m.state_dict().values())


def llama_bench(tools: Path, gguf: Path, threads: int, prompt: int, new: int) -> float:
    """llama-bench's tokens/s for one run of a prompt (pp) or of generation (tg)."""
    cmd = [
        str(tools / "llama-bench"),
        "-m",
        str(gguf),
        "-t",
        str(threads),
        "-r",
        "1",
        "-p",
        str(prompt),
        "-n",
        str(new),
        "-o",
        "json",
        *llamacpp.repack_args("llama-bench"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]["avg_ts"]


def mygpt_generation(fast, new: int) -> float:
    start = time.perf_counter()
    generate(fast, torch.tensor([[50256]]), new)
    return new / (time.perf_counter() - start)


def mygpt_prompt(fast, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    fast(ids, fast.new_kv_cache(), last_only=True)
    return ids.shape[1] / (time.perf_counter() - start)


def compare(name: str, cfg: GPTConfig, tools: Path, args, work: Path) -> list[dict]:
    torch.manual_seed(0)
    model = GPTModel(cfg).eval().tie_weights()  # tied, as GPT-2's weights are
    ids = torch.randint(0, cfg.vocab_size, (1, args.prompt))
    rows = []
    for precision, outtype in PAIRS.items():
        gguf = export_gguf(model, work / f"{name}-{outtype}.gguf", outtype)
        fast = for_inference(model, precision)
        start = time.perf_counter()
        compiled = compile_for_generation(fast)
        mygpt_prompt(compiled, ids)  # a long prompt's graph too
        warm_up = time.perf_counter() - start
        mygpt_generation(fast, 8)  # eager warm-up: first calls pick kernels and allocate
        mygpt_prompt(fast, ids)
        runs = {
            k: []
            for k in (
                "llama.cpp tg",
                "MyGPT tg",
                "compiled tg",
                "llama.cpp pp",
                "MyGPT pp",
                "compiled pp",
            )
        }
        for _ in range(args.repeats):
            runs["llama.cpp tg"].append(llama_bench(tools, gguf, args.threads, 0, args.new_tokens))
            runs["MyGPT tg"].append(mygpt_generation(fast, args.new_tokens))
            runs["compiled tg"].append(mygpt_generation(compiled, args.new_tokens))
            runs["llama.cpp pp"].append(llama_bench(tools, gguf, args.threads, args.prompt, 0))
            runs["MyGPT pp"].append(mygpt_prompt(fast, ids))
            runs["compiled pp"].append(mygpt_prompt(compiled, ids))
        row = {
            "model": name,
            "precision": precision,
            "gguf": outtype.upper(),
            "weight_bytes_per_token": weight_bytes(fast),
            "compile_seconds": warm_up,
        }
        row |= {k: statistics.median(v) for k, v in runs.items()}
        rows.append(row)
        print(
            f"{name} {precision}: "
            + ", ".join(f"{k} {row[k]:.1f}" for k in runs)
            + f"; compiled in {warm_up:.1f} s",
            flush=True,
        )
        gguf.unlink()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["124M", "355M"], help="GPT-2 shapes")
    p.add_argument("--quick", action="store_true", help="a small shape, 2 repeats: a smoke test")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--prompt", type=int, default=512, help="prompt length (llama-bench's pp)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch._dynamo.config.recompile_limit = 64  # three precisions' graphs, in one process
    configs = (
        {"small": QUICK} if args.quick else {s: gpt2_config(s, qkv_bias=True) for s in args.sizes}
    )
    if args.quick:
        args.repeats, args.new_tokens, args.prompt = 2, 20, 64
    tools = llamacpp.build(log=lambda s: print(s, file=sys.stderr))
    bandwidth = read_bandwidth()
    print(
        f"CPU: {cpu_line()}; {args.threads} threads; torch {torch.__version__}; "
        f"read bandwidth {bandwidth / 1e9:.1f} GB/s",
        flush=True,
    )
    print(llamacpp.configuration(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            r for name, cfg in configs.items() for r in compare(name, cfg, tools, args, Path(tmp))
        ]
    pp = f"pp{args.prompt}"
    print(
        f"\n| model | precision (GGUF) | llama.cpp tok/s | MyGPT | compiled | best / llama.cpp | "
        f"bound | {pp} llama.cpp | {pp} MyGPT | compiled | best / llama.cpp | compile s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        r["bound"] = bandwidth / r["weight_bytes_per_token"]
        tg = max(r["MyGPT tg"], r["compiled tg"]) / r["llama.cpp tg"]
        pp_ratio = max(r["MyGPT pp"], r["compiled pp"]) / r["llama.cpp pp"]
        print(
            f"| {r['model']} | {r['precision']} ({r['gguf']}) | {r['llama.cpp tg']:.1f} | "
            f"{r['MyGPT tg']:.1f} | {r['compiled tg']:.1f} | {tg:.2f} | {r['bound']:.0f} | "
            f"{r['llama.cpp pp']:.0f} | {r['MyGPT pp']:.0f} | {r['compiled pp']:.0f} | "
            f"{pp_ratio:.2f} | {r['compile_seconds']:.0f} |"
        )
    if args.json:
        meta = {
            "cpu": cpu_line(),
            "threads": args.threads,
            "read_bandwidth": bandwidth,
            "llama.cpp": llamacpp.configuration(),
        }
        args.json.write_text(json.dumps({**meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
