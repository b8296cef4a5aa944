"""for_inference: bfloat16 and int8 weights give float32's text; auto takes the fastest here."""

import json

import pytest
import torch
from conftest import ROOT

import mygpt.inference.precision as precision_module
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
from mygpt.inference.fast import Int8Linear
from mygpt.inference.precision import AUTO_CACHE, auto_precision, shape_key

CPU = torch.device("cpu")
pytestmark = pytest.mark.slow  # trains a small model first


@pytest.fixture(scope="module")
def trained(tokenizer):
    """A small model trained for a minute's fraction on the-verdict: its logits mean something."""
    torch.manual_seed(0)
    model = GPTModel(
        GPTConfig(
            context_length=64, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True
        )
    ).tie_weights()
    train, val = load_corpus(ROOT / "the-verdict.txt", tokenizer).windows(64, 64, 8)
    settings = TrainSettings(batch_size=8, max_steps=60, lr=3e-3, eval_freq=1000)
    optimizer = make_optimizer(model, settings.peak_lr, settings.weight_decay, "cpu")
    Trainer(model, optimizer, train, val, settings, CPU).run()
    return model.eval()


def prompt(tokenizer):
    return torch.tensor([tokenizer.encode("I had always thought Jack Gisburn")])


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
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
    assert text == "".join(
        stream_text(trained, tokenizer, "I had always", Sampling(max_new_tokens=12))
    )
    sampled = [
        generate(
            fast,
            idx,
            10,
            temperature=1.0,
            top_k=20,
            top_p=0.9,
            generator=torch.Generator().manual_seed(4),
        )
        for _ in range(2)
    ]
    assert torch.equal(*sampled)


def test_weights_are_stored_in_the_precision(trained):
    bf16 = for_inference(trained, "bfloat16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    int8 = for_inference(trained, "int8")
    linears = [m for m in int8.modules() if isinstance(m, Int8Linear)]
    assert len(linears) == 2 * 4 + 1  # qkv, out_proj, 2 feed-forward per block; the head
    assert all(m.weight.dtype == torch.int8 for m in linears)
    assert int8.tok_emb.weight.dtype == torch.float32


def test_the_model_passed_in_is_untouched(trained, monkeypatch, tmp_path):
    monkeypatch.setenv("MYGPT_CACHE_DIR", str(tmp_path))
    before = {k: (v.data_ptr(), v.dtype, v.clone()) for k, v in trained.state_dict().items()}
    for precision in ("float32", "bfloat16", "int8", "auto"):
        for_inference(trained, precision)
    after = trained.state_dict()
    for name, (ptr, dtype, value) in before.items():
        assert after[name].data_ptr() == ptr and after[name].dtype == dtype
        assert torch.equal(after[name], value)
    assert trained.is_tied and not trained.training


def test_auto_takes_the_fastest_measured_and_remembers(trained, monkeypatch, tmp_path):
    monkeypatch.setenv("MYGPT_CACHE_DIR", str(tmp_path))
    timed = []
    speeds = {"float32": 50.0, "bfloat16": 90.0, "int8": 70.0}

    def decode_rate(fast):
        timed.append(fast.precision)
        return speeds[fast.precision]

    monkeypatch.setattr(precision_module, "decode_rate", decode_rate)
    heard = []
    assert for_inference(trained, "auto", log=heard.append).precision == "bfloat16"
    assert timed == ["float32", "bfloat16", "int8"]
    assert heard == [
        f"precision auto: bfloat16, measured tokens/s: float32 50.0, bfloat16 90.0, "
        f"int8 70.0 (cached in {tmp_path / AUTO_CACHE})"
    ]
    cached = json.loads((tmp_path / AUTO_CACHE).read_text())
    assert cached == {shape_key(trained, CPU): {"precision": "bfloat16", "tokens_per_s": speeds}}
    speeds.update(bfloat16=10.0)  # a second use reads the cache: no timing
    assert auto_precision(trained) == "bfloat16" and len(timed) == 3
    (tmp_path / AUTO_CACHE).write_text("{not json")  # a damaged cache is measured again
    assert auto_precision(trained) == "int8" and len(timed) == 6


def test_auto_keeps_float32_unless_another_is_faster(trained, monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("")  # nothing can be cached under it: still an answer
    monkeypatch.setenv("MYGPT_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setattr(precision_module, "decode_rate", lambda fast: 60.0)
    assert auto_precision(trained) == "float32"


def test_the_measurement_times_real_decoding(trained):
    rate = precision_module.decode_rate(for_inference(trained, "float32"), steps=4)
    assert 1.0 < rate < 1e6


def test_bad_precision_is_an_error(trained):
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose one of float32, "):
        for_inference(trained, "fp8")
