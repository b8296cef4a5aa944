"""Many sequences at once: MyGPT's batching engine beside llama.cpp's batched decoding.

    uv run python bench/batch_throughput.py                 # GPT-2 124M and 355M, each precision
    uv run python bench/batch_throughput.py --sizes 124M --precisions int8 --npl 1 16
    uv run python bench/batch_throughput.py --quick         # a small shape: a smoke test

The same random weights (GPT-2's shape, tied head, biases) go to MyGPT's engine and, through
MyGPT's GGUF exporter, to `llama-batched-bench` (built once, bench/llamacpp.py): float32 beside
F32, bfloat16 beside BF16, int8 beside Q8_0. For each number of parallel sequences (-npl), each
with its own prompt of --prompt tokens then --new-tokens generated, both report decoding's total
tokens/s (llama-batched-bench's S_TG: the generation phase, prompts done). The two alternate
in each of --repeats rounds; the table gives medians. "chat batch 1" is the chat's
one-sequence path (`generate`), the speed the engine's batches are compared with. Time to first
token: a request arriving while 15 others decode (between two steps), beside it alone.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import llamacpp  # noqa: E402 (bench/ is not a package)
from compare_llamacpp import PAIRS, QUICK, cpu_line  # noqa: E402

from mygpt import GPTConfig, GPTModel, export_gguf, get_tokenizer, gpt2_config  # noqa: E402
from mygpt.inference.engine import Engine, Request  # noqa: E402
from mygpt.inference.generate import Sampling  # noqa: E402
from mygpt.inference.precision import decode_rate, for_inference  # noqa: E402


def prompts(n: int, length: int, vocab_size: int, seed: int = 0) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randint(0, vocab_size, (length,), generator=g).tolist()) for _ in range(n)]


def engine_decode_rate(engine: Engine, n: int, prompt: int, new: int) -> float:
    """Total tokens/s of `n` sequences decoding together, from the step after every one has
    its first token to the end (llama-batched-bench's S_TG)."""
    sampling = Sampling(max_new_tokens=new)
    sequences = [
        engine.add(Request(p, sampling)) for p in prompts(n, prompt, engine.model.cfg.vocab_size)
    ]
    while not all(s.tokens for s in sequences):
        engine.step()
    start, before = time.perf_counter(), sum(len(s.tokens) for s in sequences)
    while engine.busy:
        engine.step()
    generated = sum(len(s.tokens) for s in sequences) - before
    return generated / (time.perf_counter() - start)


def time_to_first_token(engine: Engine, others: int, prompt: int) -> tuple[float, float]:
    """Seconds to the first token of a request arriving while `others` decode, and of the same
    request alone."""
    vocab = engine.model.cfg.vocab_size
    (late,) = prompts(1, prompt, vocab, seed=1)

    def first_token(request: Request) -> float:
        sequence = engine.add(request)
        start = time.perf_counter()
        while not sequence.tokens:
            engine.step()
        return time.perf_counter() - start

    alone = first_token(Request(late, Sampling(max_new_tokens=1)))
    running = [
        engine.add(Request(p, Sampling(max_new_tokens=10_000)))
        for p in prompts(others, prompt, vocab)
    ]
    while not all(s.tokens for s in running):
        engine.step()
    for _ in range(3):
        engine.step()
    joined = first_token(Request(late, Sampling(max_new_tokens=1)))
    for s in running:
        engine.cancel(s)
    while engine.busy:
        engine.step()
    return joined, alone


def llama_batched_bench(
    tools: Path, gguf: Path, npl: list[int], prompt: int, new: int, threads: int
) -> dict[int, float]:
    """llama-batched-bench's S_TG (total generated tokens/s) for each number of sequences."""
    context = max(npl) * (prompt + new) + 256
    cmd = [
        str(tools / "llama-batched-bench"),
        "-m",
        str(gguf),
        "-c",
        str(context),
        "-b",
        "2048",
        "-ub",
        "512",
    ]
    cmd += [
        "-npp",
        str(prompt),
        "-ntg",
        str(new),
        "-npl",
        ",".join(map(str, npl)),
        "-t",
        str(threads),
    ]
    cmd += llamacpp.repack_args("llama-batched-bench")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rates = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and re.fullmatch(r"\d+", cells[0]) and int(cells[2]) in npl:
            rates[int(cells[2])] = float(cells[7])  # PP | TG | B | N_KV | T_PP | S_PP | T_TG | S_TG
    if set(rates) != set(npl):
        raise RuntimeError(f"llama-batched-bench printed no S_TG for some of {npl}:\n{out}")
    return rates


def measure(name: str, cfg: GPTConfig, precision: str, tools: Path, args, work: Path) -> dict:
    torch.manual_seed(0)
    model = GPTModel(cfg).eval().tie_weights()
    gguf = export_gguf(model, work / f"{name}-{PAIRS[precision]}.gguf", PAIRS[precision])
    fast = for_inference(model, precision)
    engine = Engine(
        fast, get_tokenizer(), max_batch=max(args.npl), prefill_chunk=args.prefill_chunk
    )
    engine_decode_rate(engine, 2, 8, 4)  # warm-up: first calls pick kernels
    row = {"model": name, "precision": precision, "gguf": PAIRS[precision].upper()}
    runs = {
        "chat batch 1": [],
        "llama.cpp": [],
        "MyGPT": [],
        "ttft joined 15": [],
        "ttft alone": [],
    }
    for _ in range(args.repeats):  # alternating, so that a noisy spell hits both sides
        runs["chat batch 1"].append(decode_rate(fast, args.new_tokens))
        runs["llama.cpp"].append(
            llama_batched_bench(tools, gguf, args.npl, args.prompt, args.new_tokens, args.threads)
        )
        runs["MyGPT"].append(
            {n: engine_decode_rate(engine, n, args.prompt, args.new_tokens) for n in args.npl}
        )
        joined, alone = time_to_first_token(engine, 15, args.prompt)
        runs["ttft joined 15"].append(joined)
        runs["ttft alone"].append(alone)
    for key, values in runs.items():
        if isinstance(values[0], dict):
            row[key] = {n: statistics.median(v[n] for v in values) for n in args.npl}
        else:
            row[key] = statistics.median(values)
    joined, alone = row["ttft joined 15"], row["ttft alone"]
    gguf.unlink()
    rates = ", ".join(f"{n}: {row['MyGPT'][n]:.1f} / {row['llama.cpp'][n]:.1f}" for n in args.npl)
    print(
        f"{name} {precision}: tokens/s MyGPT / llama.cpp by sequences {rates}; chat batch 1 "
        f"{row['chat batch 1']:.1f}; first token {joined * 1000:.0f} ms joining 15, "
        f"{alone * 1000:.0f} ms alone",
        flush=True,
    )
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["124M", "355M"], help="GPT-2 shapes")
    p.add_argument("--precisions", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--npl", nargs="+", type=int, default=[1, 4, 16, 64], help="sequences at once")
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens per sequence")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per sequence")
    p.add_argument("--prefill-chunk", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="medians of this many runs")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--quick", action="store_true", help="a small shape, few tokens: a smoke test")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    configs = (
        {"small": QUICK} if args.quick else {s: gpt2_config(s, qkv_bias=True) for s in args.sizes}
    )
    if args.quick:
        args.npl, args.prompt, args.new_tokens, args.repeats = [1, 4], 8, 4, 1
    tools = llamacpp.build(log=lambda s: print(s, file=sys.stderr))
    print(f"CPU: {cpu_line()}; {args.threads} threads; torch {torch.__version__}", flush=True)
    print(llamacpp.configuration(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            measure(name, cfg, precision, tools, args, Path(tmp))
            for name, cfg in configs.items()
            for precision in args.precisions
        ]
    npl = args.npl
    head = " | ".join(f"{n} seq MyGPT / llama.cpp" for n in npl)
    print(
        f"\n| model | precision (GGUF) | chat batch 1 | {head} | 16 / batch 1 "
        "| first token joining 15 / alone |"
    )
    print("| --- | --- | --- |" + " --- |" * len(npl) + " --- | --- |")
    for r in rows:
        cells = " | ".join(f"{r['MyGPT'][n]:.1f} / {r['llama.cpp'][n]:.1f}" for n in npl)
        best_one = max(r["chat batch 1"], r["MyGPT"].get(1, 0))
        scale = f"{r['MyGPT'][16] / best_one:.1f}x" if 16 in npl else "-"
        ttft = f"{r['ttft joined 15'] * 1000:.0f} / {r['ttft alone'] * 1000:.0f} ms"
        print(
            f"| {r['model']} | {r['precision']} ({r['gguf']}) | {r['chat batch 1']:.1f} "
            f"| {cells} | {scale} | {ttft} |"
        )
    if args.json:
        meta = {"cpu": cpu_line(), "threads": args.threads, "llama.cpp": llamacpp.configuration()}
        meta |= {"prompt": args.prompt, "new_tokens": args.new_tokens}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
