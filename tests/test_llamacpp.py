"""Exported GGUF files in real llama.cpp: its greedy text equals MyGPT's, q8_0 keeps perplexity.

They need llama.cpp's tools, built by `uv run python bench/llamacpp.py` (cached per machine), and
take minutes, so they run after the suite, as .ci/run runs them:
`MYGPT_REQUIRE_LLAMACPP=1 uv run pytest tests/test_llamacpp.py`; without it they skip, built or not.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import llamacpp  # bench/llamacpp.py: conftest puts bench/ on the path
import pytest
import torch
from conftest import pydoc_text

from mygpt import GPTConfig, GPTModel, export_gguf, generate, load_model
from mygpt.bpe import count_words, train_bpe
from mygpt.tokenizer import char_tokenizer, make_tokenizer

if os.environ.get("MYGPT_REQUIRE_LLAMACPP") != "1":
    pytest.skip(
        "llama.cpp runs in .ci/run (MYGPT_REQUIRE_LLAMACPP=1 uv run pytest tests/test_llamacpp.py)",
        allow_module_level=True,
    )
TOOLS = llamacpp.tools_dir()
if TOOLS is None:
    raise RuntimeError("MYGPT_REQUIRE_LLAMACPP=1 but llama.cpp is not built: run bench/llamacpp.py")

PROMPTS = ["The return statement", "A class definition defines", "If the expression is true,"]
N_NEW = 40


@pytest.fixture(scope="module")
def trained(trained_model_file, tmp_path_factory):
    """(model, {outtype: .gguf path}) for the small model trained on Python's documentation."""
    model = load_model(trained_model_file)
    folder = tmp_path_factory.mktemp("gguf")
    return model, {o: export_gguf(model, folder / f"m-{o}.gguf", o) for o in ("f32", "q8_0")}


def llama(tool: str, *args, repack: bool | None = None) -> subprocess.CompletedProcess:
    """Run one of llama.cpp's tools; without repacking where this CPU needs it (llamacpp.py)."""
    cmd = [str(TOOLS / tool), "-t", "2", *map(str, args), *llamacpp.repack_args(tool, repack)]
    # errors="replace": a token that is part of a character prints as a lone byte
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def prompt_ids(path: Path, prompt: str) -> list[int]:
    """The ids llama.cpp's own tokenizer gives `prompt` (llama-tokenize prints them to stdout;
    --verbose-prompt's lines go through its asynchronous log, which can lose the last ones)."""
    out = llama("llama-tokenize", "-m", path, "-p", prompt, "--ids", "--log-disable")
    return json.loads(out.stdout)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_llama_cpp_greedy_text_equals_mygpt(trained, tokenizer, prompt):
    model, files = trained
    start = prompt_ids(files["f32"], prompt)
    assert start == tokenizer.encode(prompt)  # the same tokenizer inside the GGUF
    args = shlex.split("--temp 0 -no-cnv --no-warmup --simple-io")
    out = llama("llama-completion", "-m", files["f32"], "-p", prompt, "-n", N_NEW, *args)
    ids = generate(model, torch.tensor([start]), N_NEW)[0].tolist()
    assert len(set(ids[len(start) :])) >= 5  # a real continuation, not one token repeated
    assert out.stdout == tokenizer.decode(ids) + "\n\n"  # llama-completion ends with two newlines


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_llama_cpp_ids_equal_mygpt_with_your_own_tokenizer(kind, tmp_path):
    if kind == "char":  # no merges: the export adds one that makes no token (gguf_file.py)
        tokenizer = char_tokenizer()
    else:
        ranks = train_bpe(count_words([pydoc_text()[:100_000]]), 800)
        tokenizer = make_tokenizer(ranks, "bpe")
    torch.manual_seed(0)
    cfg = GPTConfig(tokenizer.n_vocab, context_length=64, emb_dim=32, n_heads=2, n_layers=1)
    model = GPTModel(cfg)
    model.tokenizer = tokenizer
    path = export_gguf(model, tmp_path / "m.gguf", "f32")
    for prompt in [*PROMPTS, "import os, sys  # héllo wörld 🙂 日本語", "x  \n\n  y's 're 123"]:
        assert prompt_ids(path, prompt) == tokenizer.encode(prompt), prompt


def perplexity(path: Path, held_out: Path, repack: bool | None = None) -> float:
    out = llama("llama-perplexity", "-m", path, "-f", held_out, "-c", 64, repack=repack)
    found = re.search(r"Final estimate: PPL = ([\d.]+)", out.stderr)
    assert found, f"no 'Final estimate' line in llama-perplexity's log:\n{out.stderr[-2000:]}"
    return float(found[1])


@pytest.fixture
def held_out(tmp_path) -> Path:
    path = tmp_path / "held-out.txt"
    path.write_text(" ".join(pydoc_text()[200_000:].split())[:20_000])  # not trained on
    return path


def test_q8_0_perplexity_within_one_percent_of_f32(trained, held_out):
    _, files = trained
    ppl = {outtype: perplexity(path, held_out) for outtype, path in files.items()}
    assert abs(ppl["q8_0"] / ppl["f32"] - 1) < 0.01, ppl


def test_without_repacking_q8_0_perplexity_is_the_same(trained, held_out):
    """The path AMX CPUs take (--no-repack), run on every CPU: the same file, the same score."""
    _, files = trained
    assert llamacpp.repack_args("llama-perplexity", repack=False) == ["--no-repack"]
    assert llamacpp.repack_args("llama-bench", repack=False) == ["--repack", "0"]
    without = perplexity(files["q8_0"], held_out, repack=False)
    f32 = perplexity(files["f32"], held_out, repack=False)
    assert abs(without / f32 - 1) < 0.01, (without, f32)
    if not llamacpp.no_repack():  # repacking runs here: both ways give the same score
        assert abs(without / perplexity(files["q8_0"], held_out) - 1) < 1e-3


def test_the_speed_comparison_runs_and_writes_json(tmp_path):
    """bench/compare_llamacpp.py --quick: every row measured on both sides (no thresholds)."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "compare_llamacpp.py"),
            "--quick",
            "--json",
            str(tmp_path / "speed.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "speed.json").read_text())
    assert [(r["precision"], r["gguf"]) for r in results["rows"]] == [
        ("float32", "F32"),
        ("bfloat16", "BF16"),
        ("int8", "Q8_0"),
    ]
    for row in results["rows"]:
        for side in ("llama.cpp tg", "MyGPT tg", "compiled tg", "llama.cpp pp", "MyGPT pp"):
            assert row[side] > 0, side
        assert 0 < row["weight_bytes_per_token"] < 4 * 50257 * 128 * 2  # the small shape's
    assert results["read_bandwidth"] > 1e9
    assert "| small | int8 (Q8_0) |" in out.stdout
    assert results["llama.cpp"] == llamacpp.configuration()


def test_the_speed_comparison_runs_without_repacking(tmp_path):
    """llama-bench with --repack 0, as on AMX CPUs: it runs and measures every row."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MYGPT_LLAMACPP_NO_REPACK": "1"}
    out = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "compare_llamacpp.py"),
            "--quick",
            "--json",
            str(tmp_path / "speed.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "speed.json").read_text())
    assert results["llama.cpp"].endswith("repack off")
    assert all(row["llama.cpp tg"] > 0 and row["llama.cpp pp"] > 0 for row in results["rows"])


def run_bench(script: str, *args: str, out_json: Path) -> tuple[str, dict]:
    """A benchmark's --quick run: its stdout and its JSON."""
    root = Path(__file__).resolve().parent.parent
    command = [
        sys.executable,
        str(root / "bench" / script),
        "--quick",
        *args,
        "--json",
        str(out_json),
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, json.loads(out_json.read_text())


def test_the_batch_throughput_comparison_runs_and_writes_json(tmp_path):
    """bench/batch_throughput.py --quick: the engine and llama-batched-bench at each batch."""
    stdout, results = run_bench("batch_throughput.py", out_json=tmp_path / "batch.json")
    rows = results["rows"]
    assert [r["precision"] for r in rows] == ["float32", "bfloat16", "int8"]
    for row in rows:
        for side in ("MyGPT", "llama.cpp"):
            assert set(row[side]) == {"1", "4"} and all(v > 0 for v in row[side].values())
        assert row["chat batch 1"] > 0 and row["ttft alone"] > 0 and row["ttft joined 15"] > 0
    assert "| small | int8 (Q8_0) |" in stdout


def test_the_server_load_comparison_runs_without_errors(tmp_path):
    """bench/serve_load.py --quick: mygpt serve and llama-server under streaming clients."""
    _, results = run_bench("serve_load.py", "--precisions", "int8", out_json=tmp_path / "load.json")
    rows = results["rows"]
    assert [r["clients"] for r in rows] == [1, 4]
    for row in rows:
        mine = row["MyGPT"]
        assert mine["errors"] == 0 and mine["lost"] == 0 and mine["done"] == 8
        assert mine["tokens_per_s"] > 0 and row["llama-server"]["tokens_per_s"] > 0
