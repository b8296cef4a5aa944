"""score_tokens: the loss over non-overlapping windows, against an independent NumPy GPT-2."""

import numpy as np
import pytest
import torch
from conftest import ROOT
from reference import gpt2_logits, openai_layout

from mygpt import GPTConfig, GPTModel, get_tokenizer, score_tokens


def reference_loss(params, tokens, context_length, n_head):
    """Mean next-token cross-entropy, window by window, in float64."""
    nll = []
    for start in range(0, len(tokens) - 1, context_length):
        inputs = tokens[start : start + context_length]
        targets = tokens[start + 1 : start + context_length + 1]
        inputs = inputs[: len(targets)]
        logits = gpt2_logits(params, list(inputs), n_head)
        top = logits.max(-1, keepdims=True)
        log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        nll.extend(-log_probs[np.arange(len(targets)), targets])
    return float(np.mean(nll)), len(nll)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(context_length=32, emb_dim=32, n_heads=4, n_layers=2)).eval()
    with torch.no_grad():  # biases and norms start at zero/one: make them matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_loss_equals_numpy_reference(model):
    text = (ROOT / "the-verdict.txt").read_text()[:1000]
    tokens = np.array(get_tokenizer().encode(text))
    assert len(tokens) % 32 != 1  # the last window is shorter than the rest
    expected, n = reference_loss(openai_layout(model.state_dict()), tokens, 32, n_head=4)
    score = score_tokens(model, tokens, batch_size=3)
    assert score.n_tokens == n == len(tokens) - 1
    assert abs(score.loss - expected) < 1e-4
    assert score.perplexity == pytest.approx(np.exp(expected), rel=1e-4)
    # Shorter windows see less context: another number, also equal to the reference.
    shorter, _ = reference_loss(openai_layout(model.state_dict()), tokens, 7, n_head=4)
    assert abs(score_tokens(model, tokens, context_length=7).loss - shorter) < 1e-4
    assert abs(shorter - expected) > 1e-3


def test_batching_and_training_mode_do_not_change_the_score(model):
    tokens = np.arange(200) * 37 % 50257
    scores = {score_tokens(model, tokens, batch_size=b).loss for b in (1, 2, 64)}
    assert max(scores) - min(scores) < 1e-5
    model.train()
    assert abs(score_tokens(model, tokens).loss - min(scores)) < 1e-5  # dropout off
    assert model.training  # and the mode is given back
    model.eval()
    assert score_tokens(model, [5, 7]).n_tokens == 1
    with pytest.raises(ValueError, match="at least 2 tokens"):
        score_tokens(model, [5])
