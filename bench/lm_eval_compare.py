"""MyGPT's HellaSwag and LAMBADA beside lm-evaluation-harness run on MyGPT's HF export of the
same model, over the same items: each item's log-likelihoods, the accuracies, items/s.

    uv run python bench/lm_eval_compare.py MODEL --hellaswag FILE --lambada FILE [--limit N]
    uv run python bench/lm_eval_compare.py 124M --items 200   # random weights, pydoc items

lm-eval 0.4.13 (its HF backend, float32, on the CPU) runs in its own environment, made by
`uv run --with` (cached by uv; registry only), with local-data copies of its own task configs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from mygpt import GPTModel, get_tokenizer, load_model, save_model
from mygpt.config import GPT2_SIZES, gpt2_config
from mygpt.evaluation import tasks
from mygpt.evaluation.datasets import read_jsonl
from mygpt.export.hf import export_hf
from mygpt.inference.precision import for_inference

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from eval_items import hellaswag_records, lambada_records, write_jsonl  # noqa: E402
from lm_eval_tasks import write_tasks  # noqa: E402

LM_EVAL = "lm-eval[hf]==0.4.13"


def harness_command() -> list[str]:
    """`uv run` in lm-eval's environment, with this environment's torch and transformers."""
    packages = [LM_EVAL, "accelerate", f"torch=={torch.__version__.split('+')[0]}"]
    packages.append(f"transformers=={transformers.__version__}")
    withs = [arg for package in packages for arg in ("--with", package)]
    return ["uv", "run", "--no-project", *withs, "python", str(HERE / "lm_eval_driver.py")]


def run_harness(hf: Path, files: dict[str, Path], work: Path, batch_size: int) -> dict:
    """lm-eval's results, per-item log-likelihoods and timings for the local tasks."""
    names = write_tasks(work / "tasks", files.get("hellaswag"), files.get("lambada"))
    env = os.environ | {
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    args = ["--model", str(hf), "--tasks", ",".join(names), "--include", str(work / "tasks")]
    command = [*harness_command(), *args, "--batch-size", str(batch_size)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work)
    line = next((x for x in done.stdout.splitlines() if x.startswith("LM_EVAL_JSON ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"lm-eval failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("LM_EVAL_JSON "))


def run_mygpt(model_path: str, files: dict[str, Path], limit: int | None) -> dict:
    """MyGPT's scores of the same items: per-item log-likelihoods, metrics, seconds."""
    fast = for_inference(load_model(model_path, "cpu"), "float32")
    tokenizer = get_tokenizer()
    out = {}
    if "hellaswag" in files:
        records = read_jsonl(files["hellaswag"])[:limit]
        start = time.perf_counter()
        items, scores = tasks.hellaswag_scores(fast, tokenizer, records)
        out["hellaswag_local"] = {
            "seconds": time.perf_counter() - start,
            "metrics": tasks.hellaswag_metrics(items, scores),
            "items": [[(s.logprob, s.greedy) for s in item] for item in scores],
        }
    if "lambada" in files:
        records = read_jsonl(files["lambada"])[:limit]
        start = time.perf_counter()
        scores = tasks.lambada_scores(fast, tokenizer, records)
        out["lambada_local"] = {
            "seconds": time.perf_counter() - start,
            "metrics": tasks.lambada_metrics(scores),
            "items": [[(s.logprob, s.greedy)] for s in scores],
        }
    return out


def compare(model_path: str, files: dict[str, Path], limit: int | None, batch_size: int) -> dict:
    """Both sides over the same first `limit` items; per task: the largest per-item
    log-likelihood difference, greedy flags that differ, both metrics and both items/s."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if limit:  # the harness reads whole files: give it the same first items
            for task, path in list(files.items()):
                cut = work / f"{task}.jsonl"
                cut.write_text("".join(path.read_text(encoding="utf-8").splitlines(True)[:limit]))
                files[task] = cut
        export_hf(load_model(model_path, "cpu"), work / "hf")
        theirs = run_harness(work / "hf", files, work, batch_size)
    ours = run_mygpt(model_path, files, None)
    report = {}
    for task, mine in ours.items():
        a = [x for item in mine["items"] for x in item]
        b = [x for item in theirs["samples"][task] for x in item]
        lls_a, lls_b = np.array([x[0] for x in a]), np.array([x[0] for x in b])
        n = len(mine["items"])
        report[task] = {
            "items": n,
            "max_abs_ll_diff": float(np.max(np.abs(lls_a - lls_b))),
            "greedy_differs": sum(x[1] != bool(y[1]) for x, y in zip(a, b, strict=True)),
            "mygpt": mine["metrics"],
            "lm_eval": theirs["results"][task],
            "mygpt_items_per_s": n / mine["seconds"],
            "lm_eval_items_per_s": n / theirs["seconds"][task],
        }
    report["lm_eval_batch_size"] = batch_size
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "model", help="a model file or folder of MyGPT's, or a GPT-2 size: its shape, random"
    )
    p.add_argument("--items", type=int, help="make N items of each task from Python's docs")
    p.add_argument("--hellaswag", type=Path, help="hellaswag_val.jsonl or a file like it")
    p.add_argument("--lambada", type=Path, help="lambada_test.jsonl or a file like it")
    p.add_argument("--limit", type=int, help="the first N items of each")
    p.add_argument("--batch-size", type=int, default=16, help="lm-eval's --batch_size")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args()
    files = {k: v for k, v in (("hellaswag", args.hellaswag), ("lambada", args.lambada)) if v}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model in GPT2_SIZES:  # speed does not depend on the weights
            torch.manual_seed(0)
            model = str(Path(tmp) / "model.safetensors")
            # Untied: a head tied to N(0, 1) embeddings gives logits in the hundreds, whose
            # float32 sums differ in absolute terms far more than a trained model's.
            save_model(GPTModel(gpt2_config(args.model, qkv_bias=True)), model)
        if args.items:
            files["hellaswag"] = write_jsonl(Path(tmp) / "h.jsonl", hellaswag_records(args.items))
            files["lambada"] = write_jsonl(Path(tmp) / "l.jsonl", lambada_records(args.items))
        report = compare(model, files, args.limit, args.batch_size)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
