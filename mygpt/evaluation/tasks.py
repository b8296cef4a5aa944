"""The benchmark tasks: HellaSwag and LAMBADA as lm-evaluation-harness defines them (its
preprocessing, tokenization and metrics, under its metric names), build-nanogpt's HellaSwag,
and perplexity and bits per byte of a long text."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tiktoken

from mygpt.errors import DataError
from mygpt.evaluation.loglikelihood import Scored, Tree, score_trees, text_tree
from mygpt.evaluation.score import TextScore, score_tokens
from mygpt.inference.fast import FastGPT

Progress = Callable[[int], object] | None


@dataclass(frozen=True)
class MultipleChoice:
    """A context, its candidate endings and the right one's index."""

    context: str
    choices: tuple[str, ...]
    gold: int


def _preprocess(text: str) -> str:
    """The harness's HellaSwag clean-up: WikiHow's "[title]" and bracketed artifacts out."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_item(record: dict) -> MultipleChoice:
    """A record of the official jsonl (or of the hub's copy) as the harness reads it."""
    ctx = record["ctx_a"] + " " + record["ctx_b"].capitalize()
    return MultipleChoice(
        _preprocess(record["activity_label"] + ": " + ctx),
        tuple(_preprocess(ending) for ending in record["endings"]),
        int(record["label"]),
    )


def hellaswag_scores(
    model: FastGPT,
    tokenizer: tiktoken.Encoding,
    records: Sequence[dict],
    batch_tokens: int = 4096,
    progress: Progress = None,
) -> tuple[list[MultipleChoice], list[list[Scored]]]:
    """Each record's item and its endings' scores, as the harness's hellaswag computes them."""
    items = [_parse(hellaswag_item, r, i, "hellaswag") for i, r in enumerate(records)]
    # The harness puts its target delimiter, a space, before each ending.
    trees = [text_tree(tokenizer, it.context, [" " + c for c in it.choices]) for it in items]
    return items, score_trees(model, trees, batch_tokens, progress)


def hellaswag(
    model: FastGPT,
    tokenizer: tiktoken.Encoding,
    records: Sequence[dict],
    batch_tokens: int = 4096,
    nanogpt: bool = True,
    progress: Progress = None,
) -> dict[str, float]:
    """acc and acc_norm (the harness's: the likeliest ending, in total and per character);
    with `nanogpt`, also acc_per_token: build-nanogpt's (the raw `ctx` and endings, the
    lowest mean loss per token)."""
    items, scores = hellaswag_scores(model, tokenizer, records, batch_tokens, progress)
    metrics = hellaswag_metrics(items, scores)
    if nanogpt:
        metrics["acc_per_token"] = _nanogpt_hellaswag(model, tokenizer, records, batch_tokens)
    return metrics


def hellaswag_metrics(items: Sequence[MultipleChoice], scores: list[list[Scored]]) -> dict:
    """The harness's acc (the likeliest ending) and acc_norm (per character of the ending)."""
    golds = np.array([it.gold for it in items])
    lls = [np.array([s.logprob for s in item]) for item in scores]
    lengths = [np.array([float(len(c)) for c in it.choices]) for it in items]
    norm = [np.argmax(ll / n) for ll, n in zip(lls, lengths, strict=True)]
    return {
        "acc": _mean(np.array([np.argmax(ll) for ll in lls]) == golds),
        "acc_norm": _mean(np.array(norm) == golds),
    }


def _nanogpt_hellaswag(
    model: FastGPT, tokenizer: tiktoken.Encoding, records: Sequence[dict], batch_tokens: int
) -> float:
    """build-nanogpt's HellaSwag: context and " " + ending encoded apart, no clean-up; the
    ending with the lowest mean token loss wins."""
    trees, golds = [], []
    for i, record in enumerate(records):
        ctx, endings, gold = _parse(
            lambda r: (r["ctx"], r["endings"], int(r["label"])), record, i, "hellaswag"
        )
        context = tuple(tokenizer.encode_ordinary(ctx))
        trees.append(
            Tree(context, tuple(tuple(tokenizer.encode_ordinary(" " + e)) for e in endings))
        )
        golds.append(gold)
    scores = score_trees(model, trees, batch_tokens)
    picks = [np.argmax([s.logprob / s.n_tokens for s in item]) for item in scores]
    return _mean(np.array(picks) == np.array(golds))


def lambada_item(record: dict) -> tuple[str, str]:
    """The harness's lambada_openai: all words but the last, and " " + the last word."""
    words = record["text"].split(" ")
    if len(words) < 2:
        raise ValueError("the text has fewer than two words")
    return " ".join(words[:-1]), " " + words[-1]


def lambada_scores(
    model: FastGPT,
    tokenizer: tiktoken.Encoding,
    records: Sequence[dict],
    batch_tokens: int = 4096,
    progress: Progress = None,
) -> list[Scored]:
    """Each record's last word scored after the rest, as the harness's lambada_openai does."""
    pairs = [_parse(lambada_item, r, i, "lambada") for i, r in enumerate(records)]
    trees = [text_tree(tokenizer, context, [word]) for context, word in pairs]
    return [item[0] for item in score_trees(model, trees, batch_tokens, progress)]


def lambada(
    model: FastGPT,
    tokenizer: tiktoken.Encoding,
    records: Sequence[dict],
    batch_tokens: int = 4096,
    progress: Progress = None,
) -> dict[str, float]:
    """acc (the last word is the greedy continuation) and perplexity (exp of minus the mean
    log-likelihood of the last word), as the harness aggregates them."""
    return lambada_metrics(lambada_scores(model, tokenizer, records, batch_tokens, progress))


def lambada_metrics(scores: Sequence[Scored]) -> dict[str, float]:
    """The harness's acc and perplexity of the last words' scores."""
    return {
        "acc": _mean([s.greedy for s in scores]),
        "perplexity": math.exp(-float(np.mean([s.logprob for s in scores]))),
    }


def text_score(
    model: FastGPT,
    tokenizer: tiktoken.Encoding,
    text: str,
    stride: int | None = None,
    batch_size: int = 8,
) -> TextScore:
    """Every token of `text` scored after <|endoftext|> (the first one too, so bits per byte
    covers every byte), in windows of the model's context `stride` tokens apart."""
    tokens = [tokenizer.eot_token, *tokenizer.encode_ordinary(text)]
    score = score_tokens(model, tokens, batch_size=batch_size, stride=stride)
    n_words = len(re.split(r"\s+", text))  # the harness's word count
    return TextScore(score.loss, score.n_tokens, len(text.encode("utf-8")), n_words)


def text_metrics(score: TextScore) -> dict[str, float]:
    """A text's score under the harness's metric names."""
    return {
        "perplexity": score.perplexity,
        "bits_per_byte": score.bits_per_byte,
        "word_perplexity": score.word_perplexity,
        "loss": score.loss,
        "tokens": score.n_tokens,
    }


def _parse(read: Callable, record: dict, index: int, task: str):
    try:
        return read(record)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        what = f"no field {e}" if isinstance(e, KeyError) else str(e)
        raise DataError(f"{task} record {index + 1}: {what}") from None


def _mean(hits) -> float:
    return float(np.mean(np.asarray(hits, dtype=float)))
