"""Small files in the formats of the evaluation datasets, made from Python's documentation:
HellaSwag's validation jsonl, OpenAI's LAMBADA jsonl, a WikiText archive, Alpaca records."""

from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path

from pydoc_text import pydoc_text


def sentences(n: int, seed: int = 0) -> list[str]:
    """`n` prose sentences of 12 to 40 words from the documentation, in a seeded order."""
    prose = " ".join(pydoc_text().split())
    found = [s for s in re.split(r"(?<=[.!?])\s+", prose) if 12 <= len(s.split()) <= 40]
    random.Random(seed).shuffle(found)
    return found[:n]


def hellaswag_records(n: int, seed: int = 0) -> list[dict]:
    """Records with every field of hellaswag_val.jsonl: a sentence cut into ctx_a and ctx_b,
    its true rest and three others' as endings; some carry WikiHow's bracketed artifacts."""
    rng = random.Random(seed)
    pool = sentences(4 * n, seed)
    records = []
    for i in range(n):
        words = pool[i].split()
        a, b = len(words) // 3, 2 * len(words) // 3
        endings = [" ".join(words[b:])] + [
            " ".join(pool[n + 3 * i + k].split()[-(len(words) - b) :]) for k in range(3)
        ]
        order = list(range(4))
        rng.shuffle(order)
        wikihow = i % 3 == 0
        ctx_a = ("[header] How to read the docs [title] " if wikihow else "") + " ".join(words[:a])
        records.append(
            {
                "ind": 24 + i,
                "activity_label": "Reading documentation" if i % 2 else "Python",
                "ctx_a": ctx_a,
                "ctx_b": " ".join(words[a:b]).lower(),
                "ctx": ctx_a + " " + " ".join(words[a:b]).lower(),
                "endings": [
                    endings[k] + (" [step] Done." if wikihow and k == 1 else "") for k in order
                ],
                "source_id": f"pydoc~{i}",
                "split": "val",
                "split_type": "indomain" if i % 2 else "zeroshot",
                "label": order.index(0),
            }
        )
    return records


def lambada_records(n: int, seed: int = 1) -> list[dict]:
    """{"text": passage} lines as in lambada_test.jsonl, the last word the target: two
    sentences, cut after a common word in the second (words a small model can get right)."""
    pool = sentences(2 * n, seed)
    common = {"the", "of", "to", "a", "is", "and", "be", "in"}
    records = []
    for i in range(n):
        words = pool[2 * i + 1].split()
        cut = max((k for k, w in enumerate(words) if w in common), default=len(words) - 1)
        records.append({"text": pool[2 * i] + " " + " ".join(words[: cut + 1])})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def wikitext_zip(path: Path, member: str, text: str) -> Path:
    """An archive laid out as wikitext-2-raw-v1.zip, holding `text` as its test split."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, text)
        archive.writestr(member.replace("test", "train"), "unused")
    return path
