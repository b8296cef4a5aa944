import pytest
import torch
from conftest import TINY

from mygpt import GPTModel, UserError, load_checkpoint, load_model, save_model


def test_round_trip(tiny_model, tmp_path):
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    loaded = load_model(path)
    assert loaded.cfg == TINY and not loaded.training
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    torch.testing.assert_close(loaded(idx), tiny_model(idx), rtol=0, atol=0)


def test_tied_head_stays_tied(tmp_path):
    model = GPTModel(TINY).eval()
    model.tie_weights()
    loaded = load_model(save_model(model, tmp_path / "tied.safetensors"))
    assert loaded.out_head.weight is loaded.tok_emb.weight
    idx = torch.randint(0, TINY.vocab_size, (1, 5))
    torch.testing.assert_close(loaded(idx), model(idx), rtol=0, atol=0)


def test_other_torch_files_are_not_checkpoints(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    for name in ("tensor.pt", "other.pt"):
        with pytest.raises(UserError, match=f"{name}: not a MyGPT training checkpoint"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(UserError, match="missing.pt: no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_tied_checkpoint_state_loads_tied(tmp_path):
    """torch.save keeps the shared storage of a tied state_dict: the model comes back tied."""
    from mygpt.io.model_files import model_from_state

    tied = GPTModel(TINY).tie_weights()
    torch.save({"model": tied.state_dict()}, tmp_path / "t.pt")
    state = torch.load(tmp_path / "t.pt", weights_only=True)["model"]
    assert model_from_state(TINY, state).is_tied
    untied = GPTModel(TINY)
    loaded = model_from_state(TINY, untied.state_dict())
    assert not loaded.is_tied
    assert torch.equal(loaded.out_head.weight, untied.out_head.weight)


def test_a_run_writes_the_current_format_and_a_newer_one_is_refused(v1_here, tmp_path):
    """checkpoint.pt as io/checkpoint.py describes it: format 2, every field a run resumes from."""
    from mygpt.io.checkpoint import FORMAT, Checkpoint, read_checkpoint

    flags = "--emb-dim 32 --n-layers 1 --n-heads 2 --context-length 32 --max-steps 2"
    done = v1_here(*flags.split(), "--save-every", "2", "--output-dir", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "run" / "checkpoint.pt"
    saved = torch.load(path, weights_only=True)
    assert saved["format"] == FORMAT == 2
    assert set(saved) == {"format", "model", "config", "optimizer", "state", "data", "rng", "run"}
    checkpoint = read_checkpoint(path)
    assert isinstance(checkpoint, Checkpoint) and checkpoint.state["step"] == 2
    assert Checkpoint.from_dict(checkpoint.to_dict(), path) == checkpoint
    torch.save({**saved, "format": 3}, tmp_path / "newer.pt")
    with pytest.raises(UserError, match="format 3, written by a newer MyGPT than this one"):
        read_checkpoint(tmp_path / "newer.pt")
