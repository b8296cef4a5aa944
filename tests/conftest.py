import sys
from pathlib import Path

import pytest
import torch

from mygpt import GPTConfig, GPTModel, get_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).parent))  # for `reference`

TINY = GPTConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_layers=2)


@pytest.fixture(scope="session")
def tokenizer():
    return get_tokenizer()


@pytest.fixture
def tiny_model():
    """A small, randomly initialised model in eval mode (no dropout)."""
    torch.manual_seed(0)
    return GPTModel(TINY).eval()
