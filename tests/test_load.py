"""mygpt.load_model, the one loader: a hub folder, a MyGPT file or checkpoint, and a base with
a LoRA adapter, each giving the weights that were saved (and what the file carries)."""

import json
from dataclasses import asdict

import pytest
import torch
from conftest import ROOT

from mygpt import GPTConfig, GPTModel, UserError, export_hf, load_model, save_model
from mygpt.io.checkpoint import save_checkpoint

SMALL = GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0)
IDS = torch.tensor([[464, 1893, 286, 257, 649, 3303]])


def logits(model: GPTModel) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDS)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPTModel(SMALL).eval()


def test_a_file_a_checkpoint_and_a_hub_folder_give_the_saved_weights(model, tmp_path):
    file = save_model(model, tmp_path / "model.safetensors")
    checkpoint = save_checkpoint(
        {"model": model.state_dict(), "config": asdict(SMALL)}, tmp_path / "checkpoint.pt"
    )
    hub = export_hf(model, tmp_path / "hub")
    for source, origin in (
        (file, str(file)),
        (checkpoint, str(checkpoint)),
        (hub, f"the GPT-2 checkpoint folder {hub}"),
    ):
        loaded = load_model(source)
        assert torch.allclose(logits(loaded), logits(model), atol=1e-5), source
        assert (loaded.origin, loaded.template, loaded.training) == (origin, "none", False)


def test_the_template_a_file_records_comes_with_it(model, tmp_path):
    file = save_model(model, tmp_path / "ift.safetensors", {"template": "alpaca"})
    assert load_model(file).template == "alpaca"


def test_a_base_and_its_adapter_give_the_runs_merged_model(v1_here, model, tmp_path):
    base = save_model(model, tmp_path / "base.safetensors")
    text = tmp_path / "t.txt"
    text.write_text((ROOT / "the-verdict.txt").read_text()[:4000])
    out = tmp_path / "run"
    flags = "--lora-rank 2 --lr 1e-2 --max-steps 3 --batch-size 2 --eval-freq 5 --sample-tokens 1"
    done = v1_here("--init-from", base, "--data", text, *flags.split(), "--output-dir", out)
    assert done.returncode == 0, done.stderr
    adapted = load_model(base, adapter=out / "adapter.safetensors")
    merged = load_model(out / "model.safetensors")  # the run's own merge: the reference
    assert not torch.allclose(logits(merged), logits(model), atol=1e-3)  # it learned something
    assert torch.allclose(logits(adapted), logits(merged), atol=1e-5)
    assert adapted.origin == f"{base} with the LoRA adapter {out / 'adapter.safetensors'}"
    torch.manual_seed(1)
    other = save_model(GPTModel(SMALL), tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="was trained on other base weights"):
        load_model(other, adapter=out / "adapter.safetensors")


def test_a_bad_source_is_one_user_error(model, tmp_path):
    with pytest.raises(UserError, match="no such file or folder"):
        load_model(tmp_path / "missing.safetensors")
    hub = export_hf(model, tmp_path / "hub")
    (hub / "config.json").write_text(json.dumps([1]))
    with pytest.raises(UserError, match="not a JSON object"):
        load_model(tmp_path / "hub")
