"""Training data: read a text, split it, and cut its tokens into sliding windows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset

from mygpt.errors import DataError
from mygpt.tokenizer import ENDOFTEXT, get_tokenizer


class GPTDataset(Dataset):
    """Windows of `max_length` ids every `stride` tokens; targets are the inputs shifted by one."""

    def __init__(self, token_ids: list[int] | torch.Tensor, max_length: int, stride: int):
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        # Each window needs max_length + 1 tokens: the inputs and, one further, the last target.
        if len(ids) > max_length:
            windows = ids.unfold(0, max_length + 1, stride)  # (n_windows, max_length + 1)
        else:
            windows = ids.new_empty(0, max_length + 1)
        self.input_ids = windows[:, :-1]
        self.target_ids = windows[:, 1:]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader(
    text: str,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer: tiktoken.Encoding | None = None,
) -> DataLoader:
    """Tokenize `text`; batch its sliding windows as (inputs, targets), each (B, max_length)."""
    token_ids = (tokenizer or get_tokenizer()).encode(text, allowed_special={ENDOFTEXT})
    return DataLoader(
        GPTDataset(token_ids, max_length, stride),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
    )


class TokenWindows:
    """The same windows as GPTDataset over any 1-D token array, a memory map included.

    Only the rows of a batch are read, so a corpus on disk is never loaded whole.
    """

    def __init__(self, tokens: np.ndarray, context_length: int, stride: int):
        self.tokens, self.context_length, self.stride = tokens, context_length, stride

    def __len__(self) -> int:
        spare = len(self.tokens) - self.context_length - 1  # tokens beyond the first window
        return spare // self.stride + 1 if spare >= 0 else 0

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of the windows at `indices`, each (len(indices), context_length)."""
        span = self.context_length + 1
        rows = [self.tokens[i * self.stride : i * self.stride + span] for i in indices]
        windows = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, context_length + 1)
        return windows[:, :-1], windows[:, 1:]


def read_text(path: str | Path) -> str:
    """The UTF-8 text of a file, or a DataError saying why it cannot be used."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("no such file") from None
    except IsADirectoryError:
        raise DataError("is a directory, not a text file") from None
    except OSError as e:
        raise DataError(f"cannot be read ({e.strerror})") from None
    if not data.strip():
        raise DataError("is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"is not UTF-8 text (invalid byte at offset {e.start})") from None


def split_text(text: str, train_ratio: float = 0.9) -> tuple[str, str]:
    """Split by characters: the first `train_ratio` for training, the rest for validation."""
    split_idx = int(train_ratio * len(text))
    return text[:split_idx], text[split_idx:]


class WindowOrder:
    """Which windows each process reads at each step: the book's shuffled DataLoader order.

    A global batch is `batch_size` x `grad_accum` x `world_size` consecutive windows of the
    epoch's shuffled order. With batch_size 2, grad_accum 2 and 2 processes, step k reads
    order[8k : 8k+8] as

        accumulation pass 0:  rank 0 order[8k+0 : 8k+2]   rank 1 order[8k+2 : 8k+4]
        accumulation pass 1:  rank 0 order[8k+4 : 8k+6]   rank 1 order[8k+6 : 8k+8]

    so N processes read, between them, exactly the rows that one process with N times the
    batch reads, and the losses follow the single-process run.
    """

    def __init__(
        self,
        n_windows: int,
        batch_size: int,
        grad_accum: int = 1,
        world_size: int = 1,
        rank: int = 0,
    ):
        self.n_windows, self.batch_size, self.grad_accum = n_windows, batch_size, grad_accum
        self.world_size, self.rank = world_size, rank
        self._cached: tuple[int, list[int]] | None = None  # (seed, order) of the last epoch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.n_windows // self.global_batch  # a last, partial batch is dropped

    @staticmethod
    def draw_seed(draw: Callable[[], int], shuffle: bool = True) -> int | None:
        """Draw from the global RNG as iterating the book's DataLoader does.

        The DataLoader draws a base seed for its workers, then RandomSampler the shuffle's:
        drawing both keeps the global RNG, and so dropout, where the book has it.
        """
        draw()
        return draw() if shuffle else None

    def shuffled(self, seed: int) -> list[int]:
        """The permutation RandomSampler yields for this seed (the last one is cached)."""
        if self._cached is None or self._cached[0] != seed:
            generator = torch.Generator().manual_seed(seed)
            self._cached = (seed, torch.randperm(self.n_windows, generator=generator).tolist())
        return self._cached[1]

    def rows(self, order: Sequence[int], step: int, accum_pass: int = 0) -> Sequence[int]:
        """This process's windows for one accumulation pass of `step` (0-based in the epoch)."""
        start = step * self.global_batch
        start += (accum_pass * self.world_size + self.rank) * self.batch_size
        return order[start : start + self.batch_size]
