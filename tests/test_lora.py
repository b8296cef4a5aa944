"""LoRA (mygpt.lora): adapters on frozen weights, their merge, files, memory."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from mygpt import GPTConfig, GPTModel, export_hf, load_gpt2, load_model, save_model
from mygpt.errors import UserError
from mygpt.lora import (
    TARGETS,
    AdapterInfo,
    LinearWithLoRA,
    LoRASettings,
    adapter_state,
    apply_lora,
    base_state,
    fingerprint,
    load_adapter_state,
    lora_layers,
    merged,
    n_trainable,
    read_adapter,
    save_adapter,
)
from mygpt.training.preflight import Plan, check_memory, lora_parameters, training_bytes
from mygpt.training.trainer import make_optimizer

IDS = torch.tensor([[464, 3290, 318, 257, 1332, 13, 198, 40, 1101, 407, 3058, 484]])
UNTIED_BIASED = replace(TINY, qkv_bias=True, drop_rate=0.0)


def lora(rank=4, **kwargs) -> LoRASettings:
    return LoRASettings(lora_rank=rank, **kwargs)


def model_of(cfg=UNTIED_BIASED, tied=False, seed=0) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    return (model.tie_weights() if tied else model).eval()


def randomize_adapters(model, seed=1):
    """B is zero at first, which would hide every mistake in how the update is applied."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.normal_(0, 0.05)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("base_dtype", ["float32", "bfloat16"])
def test_step_0_is_the_base_model(tied, base_dtype):
    """B = 0: the adapted model computes exactly what its base computes (bfloat16 base: the
    base with its Linear matrices rounded to bfloat16)."""
    base = model_of(tied=tied)
    with torch.no_grad():
        if base_dtype == "bfloat16":
            for name, p in base.named_parameters():
                if p.dim() == 2 and not name.startswith(("tok_emb", "pos_emb")):
                    p.copy_(p.to(torch.bfloat16).float())
        expected = base(IDS)
    adapted = apply_lora(model_of(tied=tied), lora(base_dtype=base_dtype))
    with torch.no_grad():
        torch.testing.assert_close(adapted(IDS), expected, rtol=0, atol=0)


def test_update_is_alpha_over_rank_b_a_on_the_chosen_layers_only():
    """Each target computes W x + b + (alpha / rank) B A x (NumPy); the others are untouched."""
    model = apply_lora(model_of(), lora(rank=3, lora_alpha=6, lora_targets="value,ff_in"))
    randomize_adapters(model)
    wrapped = {name for name, m in model.named_modules() if isinstance(m, LinearWithLoRA)}
    assert wrapped == {f"trf_blocks.{i}.{TARGETS[t]}" for i in range(2) for t in ("value", "ff_in")}
    layer = model.trf_blocks[1].ff.layers[0]
    x = torch.randn(5, TINY.emb_dim)
    w, b = layer.linear.weight.detach().numpy(), layer.linear.bias.detach().numpy()
    A, B = layer.lora.A.detach().numpy(), layer.lora.B.detach().numpy()
    expected = x.numpy() @ w.T + b + 2.0 * (x.numpy() @ A.T @ B.T)
    with torch.no_grad():
        np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_is_kaiming_uniform_over_its_inputs_and_b_is_zero():
    """As nn.Linear and peft initialise lora_A: U(-1/sqrt(in), 1/sqrt(in)); B all zero."""
    model = apply_lora(model_of(replace(TINY, emb_dim=256, n_heads=4)), lora(rank=64))
    ff_out = model.trf_blocks[0].ff.layers[2].lora  # in_dim 1024
    bound = 1 / math.sqrt(1024)
    assert ff_out.A.shape == (64, 1024) and ff_out.B.shape == (256, 64)
    assert ff_out.A.abs().max() <= bound and ff_out.A.abs().max() > 0.95 * bound
    assert ff_out.A.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert not ff_out.B.any()


def test_only_adapters_train_and_the_base_stays_bit_identical():
    model = apply_lora(model_of(replace(UNTIED_BIASED, drop_rate=0.1)), lora(lora_dropout=0.1))
    before = {k: v.clone() for k, v in base_state(model).items()}
    optimizer = make_optimizer(model, 1e-2, 0.1, "cpu", decay_matrices_only=True)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for name, p in model.named_parameters() if ".lora." in name}
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(IDS[:, :-1]).flatten(0, 1), IDS[0, 1:])
        loss.backward()
        with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
        assert with_grad == {name for name in adapter_state(model)}
        optimizer.step()
    after = base_state(model)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(layer.B.any() for layer in lora_layers(model).values())  # they did train


def test_trainable_count_matches_the_preflight_formula():
    for rank, targets in ((1, "query"), (4, "query,value"), (8, ",".join(TARGETS))):
        model = apply_lora(model_of(), lora(rank=rank, lora_targets=targets))
        settings = lora(rank=rank, lora_targets=targets)
        assert n_trainable(model) == lora_parameters(TINY, rank, settings.targets)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("base_dtype", ["float32", "bfloat16"])
def test_merged_model_is_base_plus_scaled_b_a(tied, base_dtype, tmp_path):
    """merged(): a plain float32 GPTModel, W + (alpha / rank) B A in NumPy, whose logits are
    the adapted model's; it saves and loads as any model file."""
    model = apply_lora(model_of(tied=tied), lora(rank=2, lora_alpha=5, base_dtype=base_dtype))
    randomize_adapters(model)
    plain = merged(model)
    assert type(plain.trf_blocks[0].att.W_query) is torch.nn.Linear and plain.is_tied == tied
    layer = model.trf_blocks[0].att.W_query
    w = layer.linear.weight.detach().float().numpy()
    delta = 2.5 * layer.lora.B.detach().numpy() @ layer.lora.A.detach().numpy()
    np.testing.assert_allclose(
        plain.trf_blocks[0].att.W_query.weight.detach().numpy(), w + delta, rtol=1e-6, atol=1e-7
    )
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS), model(IDS), rtol=1e-5, atol=1e-5)
        loaded = load_model(save_model(plain, tmp_path / "model.safetensors"))
        torch.testing.assert_close(loaded(IDS), plain(IDS), rtol=0, atol=0)


def test_adapter_file_round_trip(tmp_path):
    model = apply_lora(model_of(), lora(rank=3, lora_targets="query,out_proj"))
    randomize_adapters(model)
    settings = lora(rank=3, lora_targets="query,out_proj")
    info = AdapterInfo.of(settings, "base.safetensors", fingerprint(model), model.cfg)
    path = save_adapter(model, info, tmp_path / "adapter.safetensors")
    read, tensors = read_adapter(path)
    assert read == info and read.targets == ("query", "out_proj") and read.alpha == 3.0
    assert tensors.keys() == adapter_state(model).keys()
    fresh = apply_lora(model_of(), settings.with_adapter(read))
    load_adapter_state(fresh, tensors)
    with torch.no_grad():
        torch.testing.assert_close(fresh(IDS), model(IDS), rtol=0, atol=0)
    with pytest.raises(UserError, match="do not fit"):
        load_adapter_state(apply_lora(model_of(), lora(rank=2)), tensors)
    with pytest.raises(UserError, match="--lora-rank 5, the adapter's is 3"):
        lora(rank=5, lora_adapter=path).with_adapter(read)
    (tmp_path / "other.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="damaged"):
        read_adapter(tmp_path / "other.safetensors")


def test_fingerprint_is_the_same_in_either_base_dtype_and_tells_bases_apart():
    f32 = model_of()
    bf16 = apply_lora(model_of(), lora(base_dtype="bfloat16"))
    assert bf16.trf_blocks[0].ff.layers[0].linear.weight.dtype == torch.bfloat16
    assert fingerprint(f32) == fingerprint(bf16) == fingerprint(apply_lora(model_of(), lora()))
    assert fingerprint(model_of(seed=1)) != fingerprint(f32)


def test_bfloat16_base_gradients_match_float32_on_the_rounded_weights():
    """The narrow weight is widened in the backward pass too: the input's gradient equals
    float32 autograd through the bfloat16-rounded weight."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 24)
    narrow = LinearWithLoRA(torch.nn.Linear(16, 24), 2, 2.0)
    narrow.linear.load_state_dict(linear.state_dict())
    narrow.linear.weight = torch.nn.Parameter(linear.weight.detach().to(torch.bfloat16), False)
    x1 = torch.randn(3, 16, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    narrow(x1).square().sum().backward()
    w = linear.weight.detach().to(torch.bfloat16).float()
    F.linear(x2, w, linear.bias.detach()).square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("with_lora", [False, True])
def test_activation_checkpointing_changes_no_number(with_lora):
    """Recomputed blocks replay dropout's random draws: loss and every gradient equal."""
    results = []
    for checkpointing in (False, True):
        model = model_of(replace(UNTIED_BIASED, drop_rate=0.2)).train()
        if with_lora:
            apply_lora(model, lora(lora_dropout=0.1))
            randomize_adapters(model)
        model.activation_checkpointing = checkpointing
        torch.manual_seed(5)
        loss = F.cross_entropy(model(IDS[:, :-1]).flatten(0, 1), IDS[0, 1:])
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == loss_b and grads_a.keys() == grads_b.keys() and grads_a
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)


def test_load_gpt2_into_bfloat16_a_tensor_at_a_time(tmp_path):
    """A hub-layout folder loaded with bfloat16 Linear matrices: each is the float32 load's,
    rounded; embeddings, norms and biases stay float32; no float32 cache file is written."""
    torch.manual_seed(0)
    source = model_of(replace(TINY, qkv_bias=True)).tie_weights()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export_hf(source, tmp_path / "hub")
    narrow = load_gpt2(tmp_path / "hub", linear_dtype=torch.bfloat16)
    assert not (tmp_path / "hub" / "mygpt.safetensors").exists()
    wide = load_gpt2(tmp_path / "hub")
    assert (tmp_path / "hub" / "mygpt.safetensors").exists()
    for (name, a), (_, b) in zip(
        narrow.state_dict().items(), wide.state_dict().items(), strict=True
    ):
        is_matrix = a.dim() == 2 and not name.startswith(("tok_emb", "pos_emb", "out_head"))
        assert a.dtype == (torch.bfloat16 if is_matrix else torch.float32), name
        assert torch.equal(a, b.to(a.dtype)), name
    again = load_gpt2(tmp_path / "hub", linear_dtype=torch.bfloat16)  # from the cache now
    pairs = zip(again.state_dict().values(), narrow.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_settings_refuse_what_cannot_work():
    with pytest.raises(UserError, match="--lora-targets 'query,mlp': choose from query, key"):
        lora(lora_targets="query,mlp")
    with pytest.raises(UserError, match="--lora-dropout must be in"):
        lora(lora_dropout=1.0)
    with pytest.raises(UserError, match="--base-dtype applies to LoRA: add --lora-rank"):
        LoRASettings(base_dtype="bfloat16")
    with pytest.raises(UserError, match="--lora-rank 33: must be between 1 and the layers"):
        apply_lora(model_of(), lora(rank=33))
    assert lora(rank=4).alpha == 4.0 and lora(rank=4, lora_alpha=8).alpha == 8.0


GPT2_XL = GPTConfig(context_length=1024, emb_dim=1600, n_heads=25, n_layers=48, qkv_bias=True)


def test_preflight_names_the_lora_settings_that_fit(monkeypatch):
    """GPT-2 1558M at context 1024 on 23 GB: full fine-tuning (16 bytes a parameter) is refused
    and told which LoRA settings fit; those settings pass."""
    monkeypatch.setattr("mygpt.training.preflight.available_memory", lambda device: 23e9)
    cpu = torch.device("cpu")
    with pytest.raises(UserError) as refused:
        check_memory(GPT2_XL, True, 1, "float32", cpu)
    message = str(refused.value)
    assert message.startswith("the run needs about 31.7 GB") and "23.0 GB is free" in message
    assert "--lora-rank 16 fits (about " in message
    full = training_bytes(GPT2_XL, True, 1)
    plan = Plan(16, tuple(TARGETS), base_bytes=2, checkpointing=True)
    small = training_bytes(GPT2_XL, True, 1, plan=plan)
    assert small < 12e9 < full
    check_memory(GPT2_XL, True, 1, "float32", cpu, plan)  # passes
    assert plan.flags() == "--lora-rank 16 --base-dtype bfloat16 --activation-checkpointing"
    monkeypatch.setattr("mygpt.training.preflight.available_memory", lambda device: 11e9)
    with pytest.raises(
        UserError, match=r": --lora-rank 16 --base-dtype bfloat16 fits \(about 10.4"
    ):
        check_memory(GPT2_XL, True, 1, "float32", cpu)  # the final merge is that run's peak
    monkeypatch.setattr("mygpt.training.preflight.available_memory", lambda device: 5e9)
    with pytest.raises(UserError, match="GB is free: use a smaller model") as refused:
        check_memory(GPT2_XL, True, 1, "float32", cpu)
    assert " fits " not in str(refused.value)


def test_a_lora_checkpoint_is_not_taken_for_weights(tmp_path):
    from dataclasses import asdict

    from mygpt import load_trained_model
    from mygpt.lora import AdapterInfo

    cfg = GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=1)
    info = AdapterInfo(4, 4.0, ("query",), "base.safetensors", "0" * 32, cfg)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "config": asdict(cfg), "lora": info.to_dict()}, path)
    with pytest.raises(UserError, match="holds only its adapters; use the run's model.safetensors"):
        load_trained_model(path)


def test_lora_runs_default_to_their_own_learning_rate():
    from mygpt.training.run_config import LORA_LR, ModelSettings, RunConfig

    fine_tune = RunConfig(model=ModelSettings(init_from="124M"))
    assert fine_tune.resolve(GPT2_XL).train.lr == 5e-5
    with_lora = replace(fine_tune, lora=lora(rank=8))
    assert with_lora.resolve(GPT2_XL).train.lr == LORA_LR == 2e-4
    assert (
        replace(with_lora, train=replace(with_lora.train, lr=1e-3)).resolve(GPT2_XL).train.lr
        == 1e-3
    )
