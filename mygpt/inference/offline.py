"""Offline batch generation (`mygpt generate`): a JSON Lines file of prompts in, one line of
results per prompt out, in input order, through the batching engine.

An input line is {"prompt": "..."} or an Alpaca record (instruction, input, output), which gets
the book's prompt; its output line keeps its fields and adds chapter 7's "model_response".
Every output line adds "completion", "prompt_tokens", "completion_tokens" and "finish_reason".
Lines are written whole, in order, as they are ready, so a run that stops leaves complete lines
and a rerun continues after them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import tiktoken
from tqdm import tqdm

from mygpt.data.documents import json_reason
from mygpt.data.instruct import BOM, alpaca_prompt
from mygpt.errors import DataError
from mygpt.inference.engine import Engine, Request, Sequence
from mygpt.inference.generate import Sampling
from mygpt.inference.options import alpaca_sampling
from mygpt.settings import MAX_SEED


@dataclass(frozen=True)
class PromptRecord:
    """An input line: its number, its fields, and whether it is an Alpaca record."""

    line: int
    fields: dict
    alpaca: bool


def read_prompts(path: Path) -> list[PromptRecord]:
    """The records of a .jsonl file; a DataError names the first bad line."""
    try:
        text = path.read_text(encoding="utf-8").removeprefix(BOM)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not a .jsonl file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path}: line {number}"
        try:
            fields = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise DataError(f"{where}: not JSON ({json_reason(e, True)})") from None
        if not isinstance(fields, dict):
            raise DataError(f"{where}: not an object with a prompt")
        alpaca = "prompt" not in fields and "instruction" in fields
        key = "instruction" if alpaca else "prompt"
        if not isinstance(fields.get(key), str):
            raise DataError(f'{where}: no prompt (a "prompt" text, or an Alpaca "instruction")')
        records.append(PromptRecord(number, fields, alpaca))
    if not records:
        raise DataError(f"{path}: no prompts (one JSON object a line)")
    return records


def lines_done(path: Path, n_inputs: int) -> int:
    """How many complete lines `path` holds from an earlier run (0 if it does not exist); an
    incomplete last line, from a run killed while writing it, is cut off."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not an output file") from None
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    n = complete.count(b"\n")
    if n > n_inputs:
        raise DataError(f"{path} has {n} lines, more than the {n_inputs} prompts: another run's?")
    return n


@dataclass(frozen=True)
class Job:
    """How every prompt of a file is generated."""

    sampling: Sampling
    seed: int | None = None  # line k samples with seed + k: the same whatever runs beside it
    template: str = "none"  # "alpaca": a {"prompt"} line is an instruction


def requests(
    records: list[PromptRecord], job: Job, tokenizer: tiktoken.Encoding, engine: Engine
) -> list[tuple[Request, PromptRecord]]:
    """The engine's request for each record; a DataError names a prompt that cannot run."""
    out = []
    for record in records:
        text, sampling = record.fields.get("prompt"), job.sampling
        if record.alpaca or job.template == "alpaca":
            entry = record.fields if record.alpaca else {"instruction": text}
            text, sampling = alpaca_prompt(entry), alpaca_sampling(sampling)
        # An empty prompt starts from <|endoftext|>, as GPT-2's unconditional samples do.
        ids = tokenizer.encode(text, disallowed_special=()) or [tokenizer.eot_token]
        seed = None if job.seed is None else (job.seed + record.line) % (MAX_SEED + 1)
        request = Request(tuple(ids), sampling, seed)
        try:
            engine.check(request)
        except ValueError as e:
            raise DataError(f"line {record.line}: {e}") from None
        out.append((request, record))
    return out


def result_line(sequence: Sequence) -> str:
    """The output line of a finished sequence (tagged with its PromptRecord)."""
    record: PromptRecord = sequence.tag
    fields = dict(record.fields)
    if record.alpaca:
        fields["model_response"] = sequence.text.strip()
    fields |= {
        "completion": sequence.text,
        "prompt_tokens": len(sequence.prompt),
        "completion_tokens": len(sequence.tokens),
        "finish_reason": sequence.finish_reason,
    }
    return json.dumps(fields, ensure_ascii=False) + "\n"


def generate_file(
    engine: Engine,
    work: list[tuple[Request, PromptRecord]],
    output: Path,
    progress: Callable[[int], tqdm] | None = None,
) -> Iterator[Sequence]:
    """Run `work` through `engine`, appending each result to `output` in input order, whole
    lines only; yield the sequences as their lines are written."""
    ready: dict[int, Sequence] = {}
    order = iter([record.line for _, record in work])
    next_line = next(order, None)
    bar = progress(len(work)) if progress else None
    start, n_tokens = time.perf_counter(), 0
    with open(output, "a", encoding="utf-8") as out:
        for update in engine.run(work):
            n_tokens += update.token is not None
            if not update.sequence.finished:
                continue
            ready[update.sequence.tag.line] = update.sequence
            while next_line in ready:
                sequence = ready.pop(next_line)
                out.write(result_line(sequence))
                out.flush()
                next_line = next(order, None)
                yield sequence
            if bar:
                bar.set_postfix_str(f"{n_tokens / (time.perf_counter() - start):.1f} tokens/s")
                bar.update(1)
    if bar:
        bar.close()
