"""OpenAI's GPT-2 weights: download them and load them into a GPTModel."""

from mygpt.io.gpt2.convert import gpt2_from_params, load_gpt2
from mygpt.io.gpt2.download import DownloadError, RetryPolicy, default_models_dir, download_gpt2

__all__ = [
    "DownloadError",
    "RetryPolicy",
    "default_models_dir",
    "download_gpt2",
    "gpt2_from_params",
    "load_gpt2",
]
