"""Training data: read a text, split it, and cut its tokens into sliding windows."""

from __future__ import annotations

from pathlib import Path

import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import DataError
from .tokenizer import ENDOFTEXT, get_tokenizer


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
    return _window_loader(
        token_ids, batch_size, max_length, stride, shuffle, drop_last, num_workers
    )


def _window_loader(token_ids, batch_size, max_length, stride, shuffle, drop_last, num_workers=0):
    dataset = GPTDataset(token_ids, max_length, stride)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
    )


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


def train_val_loaders(
    text: str,
    batch_size: int,
    max_length: int,
    stride: int,
    train_ratio: float = 0.9,
    tokenizer: tiktoken.Encoding | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Loaders of the reference run: training shuffled with drop_last, validation in order.

    Raises DataError when either part is too short to give a batch.
    """
    tokenizer = tokenizer or get_tokenizer()
    loaders = []
    for part, part_text in zip(
        ("training", "validation"), split_text(text, train_ratio), strict=True
    ):
        token_ids = tokenizer.encode(part_text, allowed_special={ENDOFTEXT})
        if len(token_ids) <= max_length:
            raise DataError(
                f"too short: its {part} part has {len(token_ids):,} tokens, "
                f"one window of {max_length} needs {max_length + 1:,}"
            )
        is_train = part == "training"
        loader = _window_loader(token_ids, batch_size, max_length, stride, is_train, is_train)
        if len(loader) == 0:
            raise DataError(
                f"too short: its {part} part gives {len(loader.dataset)} window(s) "
                f"of {max_length} tokens, fewer than one batch of {batch_size}"
            )
        loaders.append(loader)
    return loaders[0], loaders[1]
