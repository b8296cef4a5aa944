"""fast.py: the inference copy computes GPTModel's logits, cached or not, in each precision."""

import platform

import pytest
import torch
from torch import nn

from mygpt import GPTConfig, GPTModel, for_inference, generate
from mygpt.inference.fast import (
    DenseLinear,
    FastGPT,
    Int8Linear,
    compile_for_generation,
    quantize_rows,
)
from mygpt.lora import LoRASettings, apply_lora

CFG = GPTConfig(vocab_size=300, context_length=40, emb_dim=48, n_heads=4, n_layers=2)


def model_of(qkv_bias: bool, tied: bool) -> GPTModel:
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(**{**CFG.__dict__, "qkv_bias": qkv_bias})).eval()
    with torch.no_grad():  # biases and norms start at zero/one: make them matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.tie_weights() if tied else model


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_float32_copy_gives_the_models_logits(qkv_bias, tied):
    model = model_of(qkv_bias, tied)
    fast = for_inference(model)
    idx = torch.randint(0, CFG.vocab_size, (2, 30))
    with torch.no_grad():
        expected = model(idx)
    torch.testing.assert_close(fast(idx), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast(idx, last_only=True), expected[:, -1:], rtol=1e-5, atol=1e-5)
    cache = fast.new_kv_cache()  # a prompt, then one token at a time
    steps = [fast(idx[:, :20], cache)] + [fast(idx[:, t : t + 1], cache) for t in range(20, 30)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, rtol=1e-5, atol=1e-5)
    assert cache.length == 30


def test_one_projection_for_query_key_and_value():
    model = model_of(qkv_bias=True, tied=True)
    fast = for_inference(model)
    block, att = fast.trf_blocks[0], model.trf_blocks[0].att
    assert block.qkv.weight.shape == (3 * CFG.emb_dim, CFG.emb_dim)
    assert torch.equal(block.qkv.weight[CFG.emb_dim : 2 * CFG.emb_dim], att.W_key.weight)
    assert torch.equal(block.qkv.bias[-CFG.emb_dim :], att.W_value.bias)
    assert fast.out_head.weight is fast.tok_emb.weight  # tied: one matrix, as in GPT-2
    assert not any(p.requires_grad for p in fast.parameters())


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
def test_the_cache_never_changes_the_tokens(precision):
    fast = for_inference(model_of(qkv_bias=True, tied=True), precision)
    idx = torch.randint(0, CFG.vocab_size, (2, 5))
    long = generate(fast, idx, 60)  # past the 40-token context: the window slides
    assert torch.equal(long, generate(fast, idx, 60, use_cache=False))


def test_onednn_and_f_linear_agree():
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    x = torch.randn(3, 5, 64)
    layer = DenseLinear.from_weight(linear.weight, linear.bias, torch.float32)
    assert layer.onednn == (platform.machine() == "x86_64")  # these machines have it
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-5, atol=1e-5)
    layer.onednn = False
    torch.testing.assert_close(layer(x), linear(x), rtol=1e-6, atol=1e-6)


def test_int8_rows_are_quantized_each_on_its_own():
    x = torch.tensor([[0.5, -1.0, 0.25], [100.0, 3.0, -50.0]])
    q, scales = quantize_rows(x)
    assert q.tolist() == [[64, -127, 32], [127, 4, -64]]  # round(x / (max|x| / 127))
    assert torch.allclose(scales.squeeze(1), torch.tensor([1.0, 100.0]) / 127)
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    layer = Int8Linear.from_weight(linear.weight, linear.bias, torch.float32)
    x = torch.randn(4, 64) * torch.tensor([[1.0], [10.0], [0.1], [3.0]])
    batched = layer(x)
    for i in range(4):  # exact int32 sums: a row's numbers do not depend on the others
        assert torch.equal(layer(x[i : i + 1]), batched[i : i + 1])
    exact = linear(x)
    assert ((batched - exact).abs().amax(1) < 0.02 * exact.abs().amax(1)).all()


def test_int8_without_the_int8_kernel_gives_the_same_numbers(monkeypatch):
    torch.manual_seed(0)
    linear = nn.Linear(64, 96)
    layer = Int8Linear.from_weight(linear.weight, linear.bias, torch.float32)
    x = torch.randn(3, 5, 64)
    fused = layer(x)
    monkeypatch.delattr(torch, "_int_mm")
    torch.testing.assert_close(layer(x), fused, rtol=1e-5, atol=1e-5)


def test_unknown_precision_is_refused_by_the_copy_too():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        FastGPT(model_of(qkv_bias=False, tied=False), "fp8")


@pytest.mark.slow  # compiles: about ten seconds a precision
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
def test_compiled_copy_gives_the_same_tokens_and_compiles_once(precision):
    from torch._dynamo.utils import counters

    fast = for_inference(model_of(qkv_bias=True, tied=True), precision)
    heard = []
    compiled = compile_for_generation(fast, log=heard.append)
    assert heard[0].startswith("compiled for generation in ")
    graphs = counters["stats"]["unique_graphs"]
    for length in (4, 9):  # prompts and positions the warm-up did not see
        idx = torch.randint(0, CFG.vocab_size, (1, length))
        assert torch.equal(generate(compiled, idx, 45), generate(fast, idx, 45))  # slides too
    assert counters["stats"]["unique_graphs"] == graphs  # all compiled by the warm-up


def test_a_lora_model_is_copied_with_its_updates_merged():
    model = model_of(qkv_bias=True, tied=True)
    idx = torch.randint(0, CFG.vocab_size, (1, 12))
    with torch.no_grad():
        base = model(idx)
    apply_lora(model, LoRASettings(lora_rank=4))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:  # B starts at zero: give the adapters an update to merge
                p.add_(0.1 * torch.randn_like(p))
        expected = model.eval()(idx)
    assert not torch.allclose(expected, base, atol=1e-3)  # the update matters
    torch.testing.assert_close(for_inference(model)(idx), expected, rtol=1e-5, atol=1e-5)
