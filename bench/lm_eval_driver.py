"""Run lm-evaluation-harness's HF backend on an HF folder over local-data task configs, and
print each item's log-likelihoods and the timings as JSON. Runs in lm-eval's own environment
(`uv run --with lm-eval...`, see lm_eval_compare.py), not MyGPT's."""

from __future__ import annotations

import argparse
import json
import time

import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="an HF folder")
    p.add_argument("--tasks", required=True, help="comma-separated task names")
    p.add_argument("--include", required=True, help="the folder of the task YAMLs")
    p.add_argument("--batch-size", type=int, default=1)
    args = p.parse_args()
    start = time.perf_counter()
    lm = HFLM(pretrained=args.model, dtype="float32", device="cpu", batch_size=args.batch_size)
    loaded = time.perf_counter()
    results, samples, seconds = {}, {}, {}
    for task in args.tasks.split(","):  # one at a time, so that each is timed alone
        begin = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task],
            task_manager=TaskManager(include_path=args.include),
            log_samples=True,
            num_fewshot=0,
            bootstrap_iters=0,  # no stderr: its bootstrap overflows on a random model's perplexity
        )
        seconds[task] = time.perf_counter() - begin
        rows = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        samples[task] = [[r[0] for r in s["resps"]] for s in rows]  # [(ll, is_greedy)] per item
        metrics = out["results"][task]
        results[task] = {
            k.split(",")[0]: v for k, v in metrics.items() if "," in k and "stderr" not in k
        }
    body = {
        "results": results,
        "samples": samples,
        "load_s": loaded - start,
        "seconds": seconds,
        "lm_eval": lm_eval.__version__,
    }
    print("LM_EVAL_JSON " + json.dumps(body))


if __name__ == "__main__":
    main()
