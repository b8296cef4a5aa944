"""for_inference: bfloat16 and int8 weights give float32's text; auto follows the hardware."""

import pytest
import torch
from conftest import ROOT

import mygpt.devices as devices
from mygpt import (
    GPTConfig,
    GPTModel,
    Sampling,
    Trainer,
    TrainSettings,
    for_inference,
    generate,
    load_corpus,
    make_optimizer,
    stream_text,
)
from mygpt.devices import resolve_dtype
from mygpt.precision import Int8Linear, auto_precision

CPU = torch.device("cpu")
pytestmark = pytest.mark.slow  # trains a small model first


@pytest.fixture(scope="module")
def trained(tokenizer):
    """A small model trained for a minute's fraction on the-verdict: its logits mean something."""
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(context_length=64, emb_dim=64, n_heads=4, n_layers=2,
                               drop_rate=0.0, qkv_bias=True)).tie_weights()  # fmt: skip
    train, val = load_corpus(ROOT / "the-verdict.txt", tokenizer).windows(64, 64, 8)
    settings = TrainSettings(batch_size=8, max_steps=60, lr=3e-3, eval_freq=1000)
    optimizer = make_optimizer(model, settings.peak_lr, settings.weight_decay, "cpu")
    Trainer(model, optimizer, train, val, settings, CPU).run()
    return model.eval()


def prompt(tokenizer):
    return torch.tensor([tokenizer.encode("I had always thought Jack Gisburn")])


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_greedy_text_equals_float32(trained, tokenizer, precision):
    idx = prompt(tokenizer)
    reference = generate(trained, idx, 20)
    fast = for_inference(trained, precision)
    assert not fast.training
    out = generate(fast, idx, 20)
    assert torch.equal(out, reference)
    # The cache, the sliding window and streaming behave as in float32.
    long = generate(fast, idx, 70)  # past the 64-token context
    assert torch.equal(long, generate(fast, idx, 70, use_cache=False))
    text = "".join(stream_text(fast, tokenizer, "I had always", Sampling(max_new_tokens=12)))
    assert text == "".join(stream_text(trained, tokenizer, "I had always",
                                       Sampling(max_new_tokens=12)))  # fmt: skip
    sampled = [generate(fast, idx, 10, temperature=1.0, top_k=20, top_p=0.9,
                        generator=torch.Generator().manual_seed(4)) for _ in range(2)]  # fmt: skip
    assert torch.equal(*sampled)


def test_weights_are_stored_in_the_precision(trained):
    bf16 = for_inference(trained, "bfloat16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    int8 = for_inference(trained, "int8")
    linears = [m for m in int8.modules() if isinstance(m, Int8Linear)]
    assert len(linears) == 2 * 6 + 1  # q, k, v, out_proj, 2 feed-forward per block; the head
    assert all(m.weight.dtype == torch.int8 for m in linears)
    assert int8.tok_emb.weight.dtype == torch.float32


def test_the_model_passed_in_is_untouched(trained):
    before = {k: (v.data_ptr(), v.dtype, v.clone()) for k, v in trained.state_dict().items()}
    for precision in ("float32", "bfloat16", "int8", "auto"):
        for_inference(trained, precision)
    after = trained.state_dict()
    for name, (ptr, dtype, value) in before.items():
        assert after[name].data_ptr() == ptr and after[name].dtype == dtype
        assert torch.equal(after[name], value)
    assert trained.is_tied and not trained.training


def test_int8_without_the_fused_kernel_gives_the_same_numbers(trained, monkeypatch):
    x = torch.randn(3, 5, 64)
    layer = Int8Linear.from_linear(trained.trf_blocks[0].ff.layers[0])
    fused = layer(x)
    monkeypatch.delattr(torch, "_weight_int8pack_mm")
    torch.testing.assert_close(layer(x), fused, rtol=1e-2, atol=1e-2)
    exact = trained.trf_blocks[0].ff.layers[0](x)
    assert (layer(x) - exact).abs().max() < 0.05 * exact.abs().max()


def test_auto_follows_the_hardware(monkeypatch):
    for amx, avx512_bf16, expected in [(True, False, "bfloat16"), (False, True, "bfloat16"),
                                       (False, False, "float32")]:  # fmt: skip
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v,
                            raising=False)  # fmt: skip
        assert resolve_dtype(CPU, "auto") == expected
        assert devices.make_autocast(CPU, "auto")().__class__.__name__ == (
            "autocast" if expected == "bfloat16" else "nullcontext"
        )
    assert resolve_dtype(CPU, "float32") == "float32"
    assert auto_precision(CPU) == "int8"
    monkeypatch.delattr(torch, "_weight_int8pack_mm")
    assert auto_precision(CPU) == "float32"  # no int8 kernel; bfloat16 is not native here


def test_bad_precision_is_an_error(trained):
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose one of float32, "):
        for_inference(trained, "fp8")
