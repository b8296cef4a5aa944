"""Byte-level BPE trained on your text, as GPT-2's tokenizer was (the book's chapter 2 bonus).

Text is cut into words by GPT-2's pre-tokenizer pattern, words into UTF-8 bytes; the 256
bytes are the first tokens. Training then repeats one step: the most frequent adjacent pair of
tokens becomes a new token, until the vocabulary is full. The last id is <|endoftext|>.

The fast path keeps the readable algorithm: each distinct word is held once with its count
(a corpus of 100 MB has about a million distinct words, not twenty million), and the pair
counts are updated for the words a merge touches only, with a heap to find the next pair.

A token's id is its merge rank, tiktoken's "mergeable ranks": encoding merges, in each word,
the adjacent pair whose joined bytes have the lowest rank, until none is a token (`encode`
here; tiktoken does the same in Rust, tests hold them equal).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator

import regex
from tiktoken_ext.openai_public import r50k_pat_str

GPT2_PATTERN = r50k_pat_str  # GPT-2's pre-tokenizer: words, numbers, punctuation, spaces


def count_words(texts: Iterable[str], pattern: str = GPT2_PATTERN) -> Counter[bytes]:
    """How often each pre-tokenized word occurs in `texts`, as UTF-8 bytes (read a megabyte
    at a time: the list of a whole text's words would take ten times its size)."""
    split = regex.compile(pattern).findall
    counts: Counter[bytes] = Counter()
    for text in texts:
        for piece in _pieces(text):
            counts.update(word.encode("utf-8") for word in split(piece))
    return counts


# A single newline between two non-spaces: no word of GPT-2's pattern spans it, so the text
# can be cut after it and its pieces counted apart.
_SAFE_CUT = regex.compile(r"\S\n(?=\S)")


def _pieces(text: str, size: int = 1 << 20) -> Iterator[str]:
    """`text` cut, at about every `size` characters, where no word is cut."""
    start = 0
    while len(text) - start > size:
        found = _SAFE_CUT.search(text, start + size)
        if found is None:
            break
        yield text[start : found.end()]
        start = found.end()
    yield text[start:]


def train_bpe(
    word_counts: Counter[bytes],
    vocab_size: int,
    n_special: int = 1,
    progress: Callable[[int], object] | None = None,
) -> dict[bytes, int]:
    """Mergeable ranks (token bytes -> id) of `vocab_size - n_special` tokens: the 256 bytes,
    then one token per merge, most frequent pair first (ties: the lowest pair of ids).

    Stops early if no pair occurs twice (a small text). `progress(n)` hears merges made.
    """
    if vocab_size < 256 + n_special:
        raise ValueError(f"a byte-level vocabulary needs at least {256 + n_special} tokens")
    vocab = [bytes([b]) for b in range(256)]  # id -> token bytes
    ranks = {token: i for i, token in enumerate(vocab)}
    words = [list(word) for word in word_counts]  # each distinct word as token ids
    counts = list(word_counts.values())
    pairs: defaultdict[tuple[int, int], int] = defaultdict(int)  # pair -> occurrences
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words holding it
    for i, word in enumerate(words):
        for pair in zip(word, word[1:], strict=False):
            pairs[pair] += counts[i]
            where[pair].add(i)
    heap = [(-n, pair) for pair, n in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size - n_special and heap:
        negative, pair = heapq.heappop(heap)
        if pairs.get(pair) != -negative:
            continue  # a count that has changed since it was pushed
        if -negative < 2:
            break  # merging a pair seen once compresses nothing
        joined = vocab[pair[0]] + vocab[pair[1]]
        new = ranks.get(joined)
        if new is None:  # two pairs can spell the same bytes: one token for both
            new = ranks[joined] = len(vocab)
            vocab.append(joined)
        changed = set()
        for i in where.pop(pair):
            word, n = words[i], counts[i]
            merged = _merge(word, pair, new)
            if len(merged) == len(word):
                continue  # an earlier merge took this word's occurrences
            for old in zip(word, word[1:], strict=False):
                pairs[old] -= n
                changed.add(old)
            for fresh in zip(merged, merged[1:], strict=False):
                pairs[fresh] += n
                where[fresh].add(i)
                changed.add(fresh)
            words[i] = merged
        pairs.pop(pair, None)
        for p in changed - {pair}:
            if pairs[p] > 0:
                heapq.heappush(heap, (-pairs[p], p))
            else:
                del pairs[p]
        if progress:
            progress(1)
    return ranks


def _merge(word: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """`word` with each occurrence of `pair`, left to right, replaced by `new`."""
    out, i, a, b = [], 0, pair[0], pair[1]
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def bpe_parts(word: bytes, ranks: dict[bytes, int], below: int | None = None) -> list[bytes]:
    """`word` cut into tokens: merge the adjacent pair whose joined bytes rank lowest (the
    leftmost of equals) until no adjacent pair is a token (of rank < `below`, if given)."""
    parts = [word[i : i + 1] for i in range(len(word))]
    while len(parts) > 1:
        found = [
            (r, i)
            for i, (a, b) in enumerate(zip(parts, parts[1:], strict=False))
            if (r := ranks.get(a + b)) is not None and (below is None or r < below)
        ]
        if not found:
            break
        i = min(found)[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def encode(text: str, ranks: dict[bytes, int], pattern: str = GPT2_PATTERN) -> list[int]:
    """Ordinary text (no special tokens) to ids, word by word: the reference for tiktoken."""
    return [
        ranks[part]
        for word in regex.findall(pattern, text)
        for part in bpe_parts(word.encode("utf-8"), ranks)
    ]


def merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge that made each token after the bytes, in rank order: the two parts that
    encoding the token with lower-ranked tokens only leaves (GPT-2's merges.txt)."""
    out = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            parts = bpe_parts(token, ranks, below=rank)
            if len(parts) != 2:
                raise ValueError(f"{token!r} is not a merge of two lower-ranked tokens")
            out.append((parts[0], parts[1]))
    return out
