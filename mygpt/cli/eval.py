"""Score a model on the benchmarks people compare: HellaSwag, LAMBADA, WikiText, any text, or
instruction responses judged by another model."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from mygpt.cli.common import (
    HelpFormatter,
    add_model_flags,
    add_settings,
    model_from_flags,
    run_main,
    settings_from,
)
from mygpt.data.corpus import corpus_text
from mygpt.data.instruct import load_instructions
from mygpt.errors import DataError, UserError
from mygpt.evaluation import tasks
from mygpt.evaluation.datasets import SOURCES, read_jsonl, read_task_text, task_file
from mygpt.evaluation.judge import BOOK_SAMPLING, Judge, judge_records, summary, with_responses
from mygpt.inference.engine import Engine
from mygpt.inference.precision import PRECISIONS, for_inference
from mygpt.io.files import write_atomically
from mygpt.settings import as_paths, require, require_positive, setting
from mygpt.training.run_config import DEFAULT_DATA

TASKS = ("hellaswag", "lambada", "wikitext2", "wikitext103", "text", "judge")
DATA, SCORING, JUDGE = "data", "scoring", "judge (--task judge)"


@dataclass(frozen=True)
class EvalSettings:
    """What is scored, on which data, and how."""

    task: str = setting(None, "what to score", group=DATA, choices=TASKS)
    data: Path | None = setting(
        None,
        "a local copy of the task's file instead of the download (hellaswag, lambada: .jsonl; "
        "wikitext: the .zip or a text file); text: anything training's --data reads (default: "
        "the-verdict.txt, as training); judge: Alpaca records (.json or .jsonl), with or "
        "without model_response",
        group=DATA,
    )
    data_url: str | None = setting(
        None, "download the task's file from this URL (a mirror) instead", group=DATA
    )
    data_dir: Path | None = setting(
        None,
        "where downloads go, under eval/ (default: $MYGPT_DATA_DIR, else ~/.cache/mygpt)",
        group=DATA,
    )
    limit: int | None = setting(
        None, "score the first N items only (a text: its first N tokens)", group=DATA, positive=True
    )
    json: Path | None = setting(None, "also write the results to this JSON file", group=DATA)
    stride: int | None = setting(
        None,
        "texts: windows of the model's context start N tokens apart; each token is scored "
        "once, with at least context - N before it (default: half the context)",
        group=SCORING,
        positive=True,
    )
    batch_tokens: int = setting(
        4096, "tokens per forward pass when scoring items", group=SCORING, positive=True
    )
    precision: str = setting(
        "float32",
        "weights: bfloat16, int8 or auto score faster, float32 is what the harness computes",
        group=SCORING,
        choices=PRECISIONS,
    )
    judge_url: str | None = setting(
        None, "an OpenAI-compatible API: http://localhost:11434/v1 (ollama), ...", group=JUDGE
    )
    judge_model: str | None = setting(None, "the judge's model name (llama3, ...)", group=JUDGE)
    judge_key: str | None = setting(
        None, "the judge's API key (default: $OPENAI_API_KEY, else none)", group=JUDGE
    )
    judge_concurrency: int = setting(4, "requests to the judge at once", group=JUDGE, positive=True)
    max_new_tokens: int = setting(
        BOOK_SAMPLING.max_new_tokens,
        "tokens of a response generated (greedily, as in the book) for a record without "
        "model_response",
        group=JUDGE,
        positive=True,
    )
    max_batch: int = setting(16, "responses generated at once", group=JUDGE, positive=True)

    def __post_init__(self) -> None:
        as_paths(self, "data", "data_dir", "json")
        if self.task is None:
            raise UserError(f"--task is required (one of {', '.join(TASKS)})")
        require_positive(self, "batch_tokens", "judge_concurrency", "max_new_tokens", "max_batch")
        for name in ("limit", "stride"):
            if getattr(self, name) is not None:
                require_positive(self, name)
        require(self.data is not None or self.task != "judge", "data", "is required by judge")
        require(
            self.data_url is None or self.task in SOURCES,
            "data_url",
            f"is for a downloaded task ({', '.join(SOURCES)})",
        )
        if self.task == "judge":
            require(self.judge_url is not None, "judge_url", "is required by judge")
            require(self.judge_model is not None, "judge_model", "is required by judge")


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    groups = {name: p.add_argument_group(name) for name in (DATA, SCORING, JUDGE)}
    add_settings(p, EvalSettings, groups=groups)
    add_model_flags(p)
    return p.parse_args(argv)


def read_data(s: EvalSettings) -> list[dict] | str:
    """The task's records or text (downloaded once where it has a source), cut to --limit."""
    if s.data is not None:
        path = s.data
    else:
        path = DEFAULT_DATA if s.task == "text" else task_file(s.task, s.data_dir, s.data_url)
    if s.task in ("hellaswag", "lambada"):
        records = read_jsonl(path)
    elif s.task == "judge":
        records = load_instructions(path)
    else:
        text = read_task_text(s.task, path) if s.task in SOURCES else corpus_text(path)
        if not text.strip():
            raise DataError(f"{path}: no text to score")
        return text
    if not records:
        raise DataError(f"{path}: no records")
    return records[: s.limit]


def evaluate(s: EvalSettings, args: argparse.Namespace, data: list[dict] | str) -> dict:
    """The task's metrics, and what else the results file holds."""
    if s.task == "judge" and all("model_response" in r for r in data):
        start = time.perf_counter()
        result = judge(s, data)  # nothing to generate: no model is loaded
        return result | {"seconds": time.perf_counter() - start}
    model = model_from_flags(args)
    tokenizer = model.tokenizer
    fast = for_inference(model, s.precision, log=print)
    del model
    start = time.perf_counter()  # items/s counts scoring, not loading
    if s.task == "judge":
        engine = Engine(fast, tokenizer, s.max_batch)
        sampling = replace(
            BOOK_SAMPLING, max_new_tokens=s.max_new_tokens, eos_id=tokenizer.eot_token
        )
        print(f"Generating the responses the records lack ({s.max_new_tokens} tokens at most)")
        result = judge(s, list(with_responses(data, engine, tokenizer, sampling)))
        return result | {"seconds": time.perf_counter() - start}
    if isinstance(data, str):
        if s.limit:
            data = tokenizer.decode(tokenizer.encode_ordinary(data)[: s.limit])
        context = fast.cfg.context_length
        if s.stride and s.stride > context:
            raise UserError(f"--stride {s.stride} exceeds the model's context ({context} tokens)")
        score = tasks.text_score(fast, tokenizer, data, s.stride or max(1, context // 2))
        metrics, seconds = tasks.text_metrics(score), time.perf_counter() - start
        return {"metrics": metrics, "items": score.n_tokens, "unit": "tokens", "seconds": seconds}
    with tqdm(
        total=len(data), unit="item", file=sys.stderr, dynamic_ncols=True, disable=None
    ) as bar:
        if s.task == "hellaswag":
            metrics = tasks.hellaswag(fast, tokenizer, data, s.batch_tokens, progress=bar.update)
        else:
            metrics = tasks.lambada(fast, tokenizer, data, s.batch_tokens, progress=bar.update)
    seconds = time.perf_counter() - start
    return {"metrics": metrics, "items": len(data), "unit": "items", "seconds": seconds}


def judge(s: EvalSettings, records: list[dict]) -> dict:
    j = Judge(s.judge_url, s.judge_model, s.judge_key, s.judge_concurrency)
    with tqdm(
        total=len(records), unit="reply", file=sys.stderr, dynamic_ncols=True, disable=None
    ) as bar:
        verdicts = judge_records(j, records, bar.update)
    samples = [
        {
            "instruction": v.record["instruction"],
            "model_response": v.record["model_response"],
            "reply": v.reply,
            "score": v.score,
        }
        for v in verdicts
    ]
    metrics = summary(verdicts)
    return {"metrics": metrics, "items": len(records), "unit": "records", "samples": samples}


def table(task: str, result: dict, seconds: float) -> str:
    """The results as the terminal shows them."""
    rows = [f"{'task':<12} {'metric':<16} {'value':>12}"]
    for name, value in result["metrics"].items():
        if value is None:
            shown = f"{'n/a':>12}"
        else:
            shown = f"{value:12.4f}" if isinstance(value, float) else f"{value:12d}"
        rows.append(f"{task:<12} {name:<16} {shown}")
    n, unit = result["items"], result["unit"]
    rows.append(f"{n:,} {unit} in {seconds:.1f} s ({n / seconds:,.1f} {unit}/s)")
    return "\n".join(rows)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`mygpt eval MODEL --task T`."""
    args = parse_args(argv, prog)
    s = settings_from(EvalSettings, args)
    data = read_data(s)  # a bad file fails before any model loads
    result = evaluate(s, args, data)
    seconds = result["seconds"]
    print(table(s.task, result, seconds))
    if s.json:
        body = {
            "model": args.model,
            "task": s.task,
            "results": {s.task: result["metrics"]},
            "n_items": result["items"],
            "unit": result["unit"],
            "seconds": round(seconds, 3),
            "config": {"precision": s.precision, "limit": s.limit, "stride": s.stride},
            **({"samples": result["samples"]} if "samples" in result else {}),
        }
        text = json.dumps(body, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        write_atomically(s.json, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        print(f"Results written to {s.json}")


if __name__ == "__main__":
    run_main(main)
