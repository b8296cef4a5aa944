"""MyGPT: GPT-2 from scratch in PyTorch."""

from .checkpoint import load_checkpoint, load_model, load_trained_model, save_checkpoint, save_model
from .config import GPT2_SIZES, GPTConfig, gpt2_config
from .corpus import Corpus, load_corpus, load_tokens
from .data import GPTDataset, TokenWindows, WindowOrder, create_dataloader, read_text, split_text
from .errors import DataError, UserError
from .evaluate import TextScore, score_tokens
from .generate import (
    Sampling,
    complete_text,
    generate,
    generate_stream,
    penalize_repetition,
    sample_next_token,
    stream_text,
)
from .model import GPTModel, KVCache
from .precision import for_inference
from .pretrained import DownloadError, download_gpt2, load_gpt2
from .run import RunConfig
from .runner import TrainResult, eval_run, train_run
from .tokenizer import get_tokenizer, text_to_token_ids, token_ids_to_text
from .train import (
    Trainer,
    TrainSettings,
    TrainState,
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    lr_at,
    make_optimizer,
    train_model,
    unwrap,
    wrap_for_training,
)
from .weights import DownloadSettings, gpt2_folder, load_weights, reshaped

__all__ = [
    "GPT2_SIZES",
    "Corpus",
    "DataError",
    "DownloadError",
    "DownloadSettings",
    "GPTConfig",
    "GPTDataset",
    "GPTModel",
    "KVCache",
    "RunConfig",
    "Sampling",
    "TextScore",
    "TokenWindows",
    "TrainResult",
    "TrainSettings",
    "TrainState",
    "Trainer",
    "UserError",
    "WindowOrder",
    "calc_loss_batch",
    "calc_loss_loader",
    "complete_text",
    "create_dataloader",
    "download_gpt2",
    "eval_run",
    "evaluate_model",
    "export_gguf",
    "export_hf",
    "for_inference",
    "generate",
    "generate_stream",
    "get_tokenizer",
    "gpt2_config",
    "gpt2_folder",
    "load_checkpoint",
    "load_corpus",
    "load_gpt2",
    "load_model",
    "load_tokens",
    "load_trained_model",
    "load_weights",
    "lr_at",
    "make_optimizer",
    "penalize_repetition",
    "read_text",
    "reshaped",
    "sample_next_token",
    "save_checkpoint",
    "save_model",
    "score_tokens",
    "split_text",
    "stream_text",
    "text_to_token_ids",
    "token_ids_to_text",
    "train_model",
    "train_run",
    "unwrap",
    "wrap_for_training",
]


def __getattr__(name: str):
    # The exporters import the gguf package (70 ms): load them when asked for, not at every start.
    if name in ("export_gguf", "export_hf"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'mygpt' has no attribute {name!r}")
