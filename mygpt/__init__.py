"""MyGPT: GPT-2 from scratch in PyTorch."""

from .checkpoint import load_model, save_model
from .config import GPT2_SIZES, GPTConfig, gpt2_config
from .data import GPTDataset, create_dataloader, read_text, split_text, train_val_loaders
from .errors import DataError, UserError
from .generate import complete_text, generate, generate_stream, sample_next_token
from .model import GPTModel, KVCache
from .pretrained import DownloadError, download_gpt2, load_gpt2
from .tokenizer import get_tokenizer, text_to_token_ids, token_ids_to_text
from .train import calc_loss_batch, calc_loss_loader, evaluate_model, make_optimizer, train_model

__all__ = [
    "GPT2_SIZES",
    "DataError",
    "DownloadError",
    "GPTConfig",
    "GPTDataset",
    "GPTModel",
    "KVCache",
    "UserError",
    "calc_loss_batch",
    "calc_loss_loader",
    "complete_text",
    "create_dataloader",
    "download_gpt2",
    "evaluate_model",
    "generate",
    "generate_stream",
    "get_tokenizer",
    "gpt2_config",
    "load_gpt2",
    "load_model",
    "make_optimizer",
    "read_text",
    "sample_next_token",
    "save_model",
    "split_text",
    "text_to_token_ids",
    "token_ids_to_text",
    "train_model",
    "train_val_loaders",
]
