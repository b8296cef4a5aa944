"""Instruction data, as the book's chapter 7 prepares it: Alpaca-format prompts, padded batches
whose padding is masked out of the loss, and the loss of the responses alone.

A record is {"instruction": ..., "input": ... (optional), "output": ...}, in a .json list (the
book's instruction-data.json, Alpaca's) or one per line of a .jsonl file.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
from torch import Tensor

from mygpt.data.documents import json_reason
from mygpt.errors import DataError
from mygpt.evaluation.score import TextScore
from mygpt.model import GPTModel
from mygpt.tokenizer import ENDOFTEXT_ID

PAD_ID, IGNORE = ENDOFTEXT_ID, -100  # the book's pad_token_id and ignore_index
RESPONSE = "\n\n### Response:\n"
TEMPLATES = ("none", "alpaca")  # what v2's --template and a model's metadata name


def format_input(entry: dict) -> str:
    """The book's Alpaca prompt: the preamble, the instruction and, when there is one, the input."""
    instruction_text = (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry.get("input") else ""
    return instruction_text + input_text


def alpaca_prompt(entry: dict) -> str:
    """What a model completes for a record: its prompt and the response header."""
    return format_input(entry) + RESPONSE


RESPONSE_END = "###"  # a response ends where the next section would start


def is_instruction_file(path: Path) -> bool:
    """A .json or .jsonl file whose first record has an "instruction" field."""
    if not path.is_file() or path.suffix.lower() not in (".json", ".jsonl"):
        return False
    try:
        return "instruction" in _first_record(path)
    except (ValueError, UnicodeDecodeError, TypeError, RecursionError):
        return False  # not JSON records: the corpus reader says what is wrong


def _first_record(path: Path) -> dict:
    """The first record, parsed alone: a .jsonl's first line, a .json list's first element
    (from its first megabyte: the whole file is read only by the reader that takes it)."""
    with open(path, "rb") as f:
        if path.suffix.lower() == ".jsonl":
            line = next((line for line in f if line.strip()), b"{}")
            record = json.loads(line)  # bytes: a byte-order mark is allowed
            return record if isinstance(record, dict) else {}
        head = f.read(1 << 20).decode("utf-8", errors="ignore").removeprefix(BOM).lstrip()
    if not head.startswith("["):
        return {}
    start = len(head) - len(head[1:].lstrip())
    record, _ = json.JSONDecoder().raw_decode(head, start)
    return record if isinstance(record, dict) else {}


BOM = "\ufeff"  # a UTF-8 byte-order mark, as some editors write it: allowed, not text


def load_instructions(path: Path) -> list[dict]:
    """The records of a .json list or a .jsonl file, each checked; a DataError names the
    record (a .json's by number, a .jsonl's by its line)."""
    try:
        text = path.read_text(encoding="utf-8").removeprefix(BOM)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    jsonl = path.suffix.lower() == ".jsonl"
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    numbered = lines if jsonl else [(1, text)]
    parsed = []
    for number, line in numbered:
        try:
            parsed.append((number, json.loads(line)))
        except (ValueError, RecursionError) as e:
            where = f"line {number}: " if jsonl else ""
            raise DataError(f"{path}: {where}not JSON ({json_reason(e, jsonl)})") from None
    if not jsonl:
        records = parsed[0][1]
        if not isinstance(records, list) or not records:
            raise DataError(f"{path}: no instruction records (a JSON list of them, or one a line)")
        parsed = list(enumerate(records, 1))
    if not parsed:
        raise DataError(f"{path}: no instruction records (a JSON list of them, or one a line)")
    for number, record in parsed:
        where = f"line {number}" if jsonl else f"record {number}"
        if not isinstance(record, dict):
            raise DataError(f"{path}: {where}: {json.dumps(record)[:40]} is not an object")
        if missing := [k for k in ("instruction", "output") if not isinstance(record.get(k), str)]:
            raise DataError(f"{path}: {where}: no text {missing[0]!r}")
    return [record for _, record in parsed]


def split_instructions(records: list[dict], train_ratio: float, seed: int) -> tuple[list, list]:
    """Shuffled with `seed`; the first `train_ratio` for training, then the book's 10% test
    part (kept out: held out for scoring later) and the rest, 5% by default, for validation."""
    shuffled = records[:]
    random.Random(seed).shuffle(shuffled)
    n_train, n_test = int(len(shuffled) * train_ratio), int(len(shuffled) * 0.1)
    train, val = shuffled[:n_train], shuffled[n_train + n_test :]
    if not train or not val:
        raise DataError(f"{len(records)} records are too few to split for training and validation")
    return train, val


def encode_record(entry: dict, tokenizer: tiktoken.Encoding) -> tuple[list[int], int]:
    """The book's InstructionDataset item: prompt and response in one encoding, and the
    number of prompt tokens (as its exercise 7.2 counts them, to mask them)."""
    prompt = format_input(entry)
    ids = tokenizer.encode(prompt + RESPONSE + entry["output"])
    return ids, len(tokenizer.encode(prompt))


def collate(
    batch: list[list[int]],
    pad_token_id: int = PAD_ID,
    ignore_index: int = IGNORE,
    allowed_max_length: int | None = None,
    prompt_lengths: list[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """The book's custom_collate_fn: each item gets <|endoftext|>, is padded to the longest,
    and its targets are -100 past that first end-of-text; `prompt_lengths` also masks the
    prompt's targets (exercise 7.2), so that only the response is learned."""
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for i, item in enumerate(batch):
        padded = item + [pad_token_id] * (batch_max_length - len(item))
        inputs, targets = torch.tensor(padded[:-1]), torch.tensor(padded[1:])
        pads = torch.nonzero(targets == pad_token_id).squeeze(1)
        targets[pads[1:]] = ignore_index  # keep the first: the model learns to stop
        if prompt_lengths is not None:
            targets[: prompt_lengths[i] - 1] = ignore_index
        if allowed_max_length is not None:
            inputs, targets = inputs[:allowed_max_length], targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst), torch.stack(targets_lst)


@dataclass
class InstructionBatches:
    """Encoded records, batched on demand like TokenWindows (`len`, `batch(rows)`)."""

    items: list[list[int]]
    prompt_lengths: list[int]
    context_length: int  # --max-length, or the model's context
    mask_prompt: bool = False
    pad_id: int = PAD_ID  # the tokenizer's <|endoftext|>
    stride = 0  # what a checkpoint's data signature records of windows

    def __post_init__(self) -> None:
        # All the ids in one array, as TokenWindows.tokens: made once, not at each checkpoint.
        self.tokens = np.fromiter((n for item in self.items for n in item), dtype=np.int64)

    @classmethod
    def of(cls, records, tokenizer, context_length, mask_prompt) -> InstructionBatches:
        encoded = [encode_record(r, tokenizer) for r in records]
        items, prompts = [e[0] for e in encoded], [e[1] for e in encoded]
        return cls(items, prompts, context_length, mask_prompt, tokenizer.eot_token)

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, rows) -> tuple[Tensor, Tensor]:
        rows = [int(r) for r in rows]
        prompts = [self.prompt_lengths[r] for r in rows] if self.mask_prompt else None
        return collate(
            [self.items[r] for r in rows],
            pad_token_id=self.pad_id,
            allowed_max_length=self.context_length,
            prompt_lengths=prompts,
        )


@torch.no_grad()
def score_responses(model: GPTModel, records: list[dict], tokenizer, device="cpu") -> TextScore:
    """One sequence per record (prompt, response, <|endoftext|>, cut to the context); the
    cross-entropy of every target after the prompt, pooled over all records."""
    model.eval()
    total, count = 0.0, 0
    for entry in records:
        ids, n_prompt = encode_record(entry, tokenizer)
        ids = (ids + [tokenizer.eot_token])[: model.cfg.context_length + 1]
        x = torch.tensor([ids[:-1]], device=device)
        y = torch.tensor(ids[1:], device=device)
        logits = model(x)[0, n_prompt - 1 :].float()
        total += F.cross_entropy(logits, y[n_prompt - 1 :], reduction="sum").double().item()
        count += len(y) - (n_prompt - 1)
    return TextScore(total / count, count)
