"""Load on `mygpt serve` beside llama-server: N concurrent streaming clients on loopback.

    uv run python bench/serve_load.py               # 124M, int8 and float32, 1, 8 and 32 clients
    uv run python bench/serve_load.py --precisions bfloat16 --clients 8 32 --requests 64
    uv run python bench/serve_load.py --soak 600    # 10 minutes at 32 clients, with disconnects
    uv run python bench/serve_load.py --quick       # a small shape: a smoke test

The same random weights (GPT-2's shape, tied head, biases) go to `mygpt serve` as a
model.safetensors and to llama-server (built once, bench/llamacpp.py) as MyGPT's GGUF export:
float32 beside F32, bfloat16 beside BF16, int8 beside Q8_0, each with as many slots as clients
(`--max-batch N`, `--parallel N`). The two never run at once. Each client, with the official
`openai` client, streams completions of its own prompts (real text, Python's documentation)
one after another, greedy, until --requests have been made in all. Reported: total generated
tokens/s, requests/s, time to first token and between tokens (p50, p99), errors.
The soak runs 32 clients on `mygpt serve` for --soak seconds, each leaving one stream in five
at a random point; it reports requests finished, left and lost, and the server's RSS after the
first minute and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
import torch

sys.path.insert(0, str(Path(__file__).parent))
import llamacpp  # noqa: E402 (bench/ is not a package)
from compare_llamacpp import PAIRS, QUICK, cpu_line  # noqa: E402
from pydoc_text import pydoc_text  # noqa: E402

from mygpt import GPTModel, export_gguf, get_tokenizer, gpt2_config  # noqa: E402
from mygpt.io.model_files import save_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompts(count: int, length: int) -> list[str]:
    """`count` prompts of `length` tokens, cut from Python's documentation."""
    tokenizer = get_tokenizer()
    ids = tokenizer.encode(pydoc_text())
    return [tokenizer.decode(ids[i * length : (i + 1) * length]) for i in range(count)]


class Server:
    """A server process on loopback, up until the block ends."""

    def __init__(self, command: list[str], port: int):
        self.command, self.port = command, port

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.command[0]} exited: {self.process.stderr.read()[-2000:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if self._healthy():
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.command[0]} did not start")

    def _healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def rss(self) -> int:
        """The process's resident memory in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def mygpt_server(model_path: Path, precision: str, slots: int, port: int) -> Server:
    command = [sys.executable, "-m", "mygpt", "serve", str(model_path), "--port", str(port)]
    command += ["--precision", precision, "--max-batch", str(slots), "--max-queue", "1024"]
    return Server(command, port)


def llama_server(
    tools: Path, gguf: Path, slots: int, context: int, port: int, threads: int
) -> Server:
    command = [
        str(tools / "llama-server"),
        "-m",
        str(gguf),
        "--port",
        str(port),
        "-t",
        str(threads),
    ]
    command += ["--parallel", str(slots), "-c", str(slots * context), "--no-webui"]
    command += llamacpp.repack_args("llama-server")
    return Server(command, port)


async def one_request(client, prompt: str, max_tokens: int, leave_after: int | None, stats: dict):
    """Stream one completion; record its first-token time, gaps and tokens."""
    start = time.perf_counter()
    last = None
    tokens = 0
    try:
        stream = await client.completions.create(
            model="m", prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True
        )
        finished = False
        async for chunk in stream:
            if not chunk.choices:
                continue
            now = time.perf_counter()
            if chunk.choices[0].text:
                tokens += 1
                if last is None:
                    stats["ttft"].append(now - start)
                else:
                    stats["itl"].append(now - last)
                last = now
            if chunk.choices[0].finish_reason is not None:
                finished = True
            if leave_after is not None and tokens >= leave_after:
                await stream.close()
                stats["left"] += 1
                stats["tokens"] += tokens
                return
        stats["tokens"] += tokens
        stats["done" if finished else "lost"] += 1
    except Exception as e:  # counted, and shown: the benchmark must report errors, not die
        stats["errors"] += 1
        stats.setdefault("messages", []).append(repr(e)[:200])


async def load(
    port: int,
    clients: int,
    requests: int,
    texts: list[str],
    max_tokens: int,
    leave: float = 0.0,
    seconds: float | None = None,
    on_minute=None,
) -> dict:
    """`clients` concurrent streaming clients until `requests` are made (or `seconds` pass)."""
    stats = {"ttft": [], "itl": [], "tokens": 0, "done": 0, "left": 0, "lost": 0, "errors": 0}
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=600
    )
    counter = iter(range(10**9))
    rng = random.Random(0)
    start = time.perf_counter()
    minute_marked = False

    async def worker() -> None:
        nonlocal minute_marked
        while True:
            elapsed = time.perf_counter() - start
            if seconds is not None and elapsed > seconds:
                return
            if on_minute and not minute_marked and elapsed > 60:
                minute_marked = True
                on_minute()
            i = next(counter)
            if seconds is None and i >= requests:
                return
            leave_after = rng.randint(1, max_tokens - 1) if rng.random() < leave else None
            await one_request(client, texts[i % len(texts)], max_tokens, leave_after, stats)

    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - start
    await client.close()
    finished = stats["done"] + stats["left"]
    return {
        "tokens_per_s": stats["tokens"] / wall,
        "requests_per_s": finished / wall,
        "ttft_p50": percentile(stats["ttft"], 50),
        "ttft_p99": percentile(stats["ttft"], 99),
        "itl_p50": percentile(stats["itl"], 50),
        "itl_p99": percentile(stats["itl"], 99),
        "done": stats["done"],
        "left": stats["left"],
        "lost": stats["lost"],
        "errors": stats["errors"],
        "error_messages": stats.get("messages", [])[:5],
        "seconds": wall,
    }


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return (
        statistics.quantiles(values, n=100, method="inclusive")[p - 1]
        if len(values) > 1
        else values[0]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="124M")
    p.add_argument("--precisions", nargs="+", default=["int8", "float32"], choices=list(PAIRS))
    p.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument(
        "--requests", type=int, default=64, help="requests per measurement (at least 2 a client)"
    )
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--soak", type=float, help="seconds of the soak at 32 clients, instead of the table"
    )
    p.add_argument("--quick", action="store_true", help="a small shape, few requests: a smoke test")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    cfg = gpt2_config(args.size, qkv_bias=True)
    if args.quick:
        cfg, args.clients, args.requests, args.prompt, args.max_tokens = QUICK, [1, 4], 8, 16, 8
    tools = llamacpp.build(log=lambda s: print(s, file=sys.stderr))
    print(f"CPU: {cpu_line()}; {args.threads} threads; torch {torch.__version__}", flush=True)
    print(llamacpp.configuration(), flush=True)
    torch.manual_seed(0)
    model = GPTModel(cfg).eval().tie_weights()
    texts = prompts(max(args.requests, 256), args.prompt)
    context = args.prompt + args.max_tokens + 16
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_path = save_model(model, Path(tmp) / "model.safetensors")
        if args.soak:
            result = soak(model_path, args, texts)
            print(json.dumps(result, indent=1))
            if args.json:
                args.json.write_text(json.dumps(result, indent=1) + "\n")
            return
        for precision in args.precisions:
            gguf = export_gguf(model, Path(tmp) / f"m-{PAIRS[precision]}.gguf", PAIRS[precision])
            for clients in args.clients:
                requests = max(args.requests, 2 * clients)
                row = {"precision": precision, "gguf": PAIRS[precision].upper(), "clients": clients}
                port = free_port()
                with llama_server(tools, gguf, clients, context, port, args.threads):
                    run = load(port, clients, requests, texts, args.max_tokens)
                    row["llama-server"] = asyncio.run(run)
                port = free_port()
                with mygpt_server(model_path, precision, clients, port):
                    row["MyGPT"] = asyncio.run(
                        load(port, clients, requests, texts, args.max_tokens)
                    )
                rows.append(row)
                print(line(row), flush=True)
            gguf.unlink()
    print(
        "\n| precision (GGUF) | clients | tokens/s MyGPT / llama-server | requests/s "
        "| TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | errors |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['precision']} ({r['gguf']}) | {r['clients']} | " + " | ".join(cells(r)) + " |")
    if args.json:
        meta = {"cpu": cpu_line(), "threads": args.threads, "llama.cpp": llamacpp.configuration()}
        meta |= {"size": args.size, "prompt": args.prompt, "max_tokens": args.max_tokens}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


def cells(row: dict) -> list[str]:
    """MyGPT / llama-server for each column of the table."""
    mine, peer = row["MyGPT"], row["llama-server"]
    columns = [("tokens_per_s", 1, ".1f"), ("requests_per_s", 1, ".2f")]
    columns += [(k, 1e3, ".0f") for k in ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99")]
    out = [f"{mine[k] * x:{f}} / {peer[k] * x:{f}}" for k, x, f in columns]
    return [*out, f"{mine['errors']} / {peer['errors']}"]


def line(row: dict) -> str:
    return f"{row['precision']} {row['clients']} clients: " + ", ".join(cells(row))


def soak(model_path: Path, args, texts: list[str]) -> dict:
    """32 clients on `mygpt serve` for args.soak seconds; one stream in five left mid-way."""
    port, precision = free_port(), args.precisions[0]
    with mygpt_server(model_path, precision, 32, port) as server:
        rss = {}
        run = load(
            port,
            32,
            0,
            texts,
            args.max_tokens,
            leave=0.2,
            seconds=args.soak,
            on_minute=lambda: rss.setdefault("after_first_minute", server.rss()),
        )
        result = asyncio.run(run)
        rss["end"] = server.rss()
    return {"cpu": cpu_line(), "precision": precision, "clients": 32, "rss_bytes": rss} | result


if __name__ == "__main__":
    main()
