import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from reference import gpt2_logits, openai_layout

from mygpt import GPTConfig, GPTModel, gpt2_config
from mygpt.model import GELU, LayerNorm
from mygpt.training.preflight import n_parameters


def test_logits_shape(tiny_model):
    idx = torch.randint(0, TINY.vocab_size, (3, 7))
    assert tiny_model(idx).shape == (3, 7, TINY.vocab_size)


@pytest.mark.parametrize(("context_length", "expected"), [(1024, 163_009_536), (256, 162_419_712)])
def test_parameter_count_of_the_v1_configuration(context_length, expected):
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = GPTModel(GPTConfig(context_length=context_length))
    assert model.num_parameters() == expected


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_preflight_counts_the_parameters_the_model_has(qkv_bias, tied):
    cfg = GPTConfig(
        vocab_size=1000, context_length=48, emb_dim=24, n_heads=3, n_layers=2, qkv_bias=qkv_bias
    )
    model = GPTModel(cfg)
    assert n_parameters(cfg, tied) == (model.tie_weights() if tied else model).num_parameters()


def test_gpt2_presets():
    assert (gpt2_config("355M").emb_dim, gpt2_config("355M").n_layers) == (1024, 24)
    assert gpt2_config("1558M").n_heads == 25
    with pytest.raises(ValueError, match="124M, 355M, 774M, 1558M"):
        gpt2_config("7B")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(emb_dim=100, n_heads=12)


def test_logits_equal_an_independent_numpy_gpt2():
    cfg = GPTConfig(
        vocab_size=97, context_length=16, emb_dim=24, n_heads=3, n_layers=2, qkv_bias=True
    )
    torch.manual_seed(1)
    model = GPTModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every parameter matters
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    ids = [5, 17, 3, 96, 0, 42, 42, 8, 11, 60]
    ours = model(torch.tensor([ids])).squeeze(0).detach().double().numpy()
    ref = gpt2_logits(openai_layout(model.state_dict()), ids, n_head=cfg.n_heads)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_causality(tiny_model):
    """Changing token t changes no logit before t, and does change the logits at t."""
    idx = torch.randint(0, TINY.vocab_size, (1, 12))
    changed = idx.clone()
    changed[0, 7] = (idx[0, 7] + 1) % TINY.vocab_size
    a, b = tiny_model(idx), tiny_model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_initial_loss_is_near_uniform_guess():
    torch.manual_seed(123)
    model = GPTModel(GPTConfig(context_length=64, emb_dim=64, n_heads=4, n_layers=2)).eval()
    idx = torch.randint(0, 50257, (2, 64))
    logits = model(idx[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten()).item()
    assert abs(loss - math.log(50257)) < 1.0


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.5))
    idx = torch.randint(0, 50257, (1, 8))
    model.train()
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


def test_layer_norm_and_gelu_match_their_formulas():
    x = torch.randn(4, 10, dtype=torch.float64)
    ln = LayerNorm(10).double()
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
    torch.testing.assert_close(ln(x), (x - mean) / torch.sqrt(var + 1e-5))
    gelu = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(GELU()(x), gelu)


def test_kv_cache_gives_the_same_logits(tiny_model):
    idx = torch.randint(0, TINY.vocab_size, (2, 20))
    full = tiny_model(idx)
    cache = tiny_model.new_kv_cache()
    parts = [tiny_model(idx[:, :9], cache), tiny_model(idx[:, 9:10], cache)]
    parts.append(tiny_model(idx[:, 10:], cache))  # several tokens after a past: explicit mask
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)
    assert cache.length == 20


def test_too_long_input_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="exceed the context length 32"):
        tiny_model(torch.zeros(1, 33, dtype=torch.long))
