"""MyGPT: GPT-2 from scratch in PyTorch."""

from mygpt.book import calc_loss_batch, calc_loss_loader, evaluate_model, train_model
from mygpt.config import GPT2_SIZES, GPTConfig, gpt2_config
from mygpt.data.corpus import Corpus, load_corpus, load_tokens
from mygpt.data.windows import (
    GPTDataset,
    TokenWindows,
    WindowOrder,
    create_dataloader,
    read_text,
    split_text,
)
from mygpt.devices import DeviceSettings
from mygpt.errors import DataError, UserError
from mygpt.evaluation.score import TextScore, score_tokens
from mygpt.inference.generate import (
    Sampling,
    complete_text,
    generate,
    generate_stream,
    penalize_repetition,
    sample_next_token,
    stream_text,
)
from mygpt.inference.precision import for_inference
from mygpt.io.checkpoint import load_checkpoint, save_checkpoint
from mygpt.io.gpt2 import DownloadError, download_gpt2, load_gpt2
from mygpt.io.load import DownloadSettings, gpt2_folder, load_model, load_weights, reshaped
from mygpt.io.load import read_trained_model as load_trained_model
from mygpt.io.model_files import save_model
from mygpt.lora import LoRASettings
from mygpt.model import GPTModel, KVCache
from mygpt.tokenizer import get_tokenizer, text_to_token_ids, token_ids_to_text
from mygpt.training.run_config import DataSettings, ModelSettings, OutputSettings, RunConfig
from mygpt.training.runner import TrainResult, eval_run, train_run
from mygpt.training.trainer import (
    Trainer,
    TrainSettings,
    TrainState,
    lr_at,
    make_optimizer,
    unwrap,
    wrap_for_training,
)

# What a notebook needs. The book's functions (GPTDataset, create_dataloader, calc_loss_batch,
# calc_loss_loader, train_model, evaluate_model) import from here too, as do the names earlier
# releases exported (load_weights, Trainer, ...): kept, and left out of __all__.
__all__ = [
    "DataError",
    "DataSettings",
    "DeviceSettings",
    "GPTConfig",
    "GPTModel",
    "LoRASettings",
    "ModelSettings",
    "OutputSettings",
    "RunConfig",
    "Sampling",
    "TrainSettings",
    "UserError",
    "complete_text",
    "eval_run",
    "for_inference",
    "generate",
    "get_tokenizer",
    "gpt2_config",
    "load_model",
    "save_model",
    "stream_text",
    "text_to_token_ids",
    "token_ids_to_text",
    "train_run",
]


def __getattr__(name: str):
    # The exporters import the gguf package (70 ms): load them when asked for, not at every start.
    if name in ("export_gguf", "export_hf"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'mygpt' has no attribute {name!r}")
