"""RunConfig: one typed value per run; the flags derived from it; train_run from Python;
checkpoints that store it once, and checkpoints from before it that still resume."""

import dataclasses
import io
import json
import shlex
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_in_process

from mygpt import GPTConfig, RunConfig, UserError, train_run
from mygpt.cli import train
from mygpt.training.run_config import DataSettings, ModelSettings, OutputSettings, parts
from mygpt.training.trainer import TrainSettings

V1 = ROOT / "MyGPT_v1_local-train.py"
TINY = shlex.split(
    "--emb-dim 32 --n-layers 1 --n-heads 2 --context-length 32 --batch-size 4 "
    "--eval-freq 2 --eval-iter 1 --sample-tokens 3 --lr 1e-3"
)
# Every flag of MyGPT_v1_local-train.py before RunConfig (commit 2dbe5e9), in --help's order.
FLAGS_BEFORE = shlex.split(
    "--data --train-ratio --memmap --stride --init-from --context-length --emb-dim "
    "--n-layers --n-heads --drop-rate --qkv-bias --models-dir --base-url --source "
    "--epochs --max-steps --batch-size --grad-accum --lr --warmup-steps --lr-decay "
    "--min-lr --weight-decay --decay-matrices-only --grad-clip --seed "
    "--allow-nonfinite --eval-freq --eval-iter --start-context --sample-tokens "
    "--sample-every --output-dir --save-every --resume --eval-only "
    "--no-memory-check --device --dtype --compile --tf32"
)


def test_defaults_resolve_to_the_books_run():
    config = RunConfig()
    resolved = config.resolve()
    assert resolved.gpt_config(50257) == GPTConfig(context_length=256)  # 124M, drop 0.1
    assert resolved.train.lr == 4e-4 and resolved.train.epochs == 10
    assert config.model.context_length is None and config.train.lr is None  # pure: a copy


def test_fine_tuning_takes_the_weights_shape_and_the_books_rates():
    weights = GPTConfig(context_length=1024, emb_dim=64, n_heads=4, n_layers=2, qkv_bias=True)
    config = RunConfig(model=ModelSettings(init_from="w.safetensors", context_length=128))
    resolved = config.resolve(weights)
    assert resolved.gpt_config(50257) == dataclasses.replace(
        weights, context_length=128, drop_rate=0.0
    )
    assert resolved.train.lr == 5e-5
    given = RunConfig(
        model=ModelSettings(init_from="w", drop_rate=0.2), train=TrainSettings(lr=1e-4)
    ).resolve(weights)
    assert (given.model.drop_rate, given.train.lr) == (0.2, 1e-4)
    with pytest.raises(UserError, match=r"^--init-from w: --emb-dim 32, the weights have 64$"):
        RunConfig(model=ModelSettings(init_from="w", emb_dim=32)).resolve(weights)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DataSettings(train_ratio=1.5), "--train-ratio must be between 0 and 1"),
        (lambda: TrainSettings(lr=-1.0), "--lr must be positive, got -1.0"),
        (lambda: TrainSettings(batch_size=0), "--batch-size must be at least 1, got 0"),
        (lambda: OutputSettings(save_every=-2), "--save-every must be >= 0, got -2"),
        (
            lambda: RunConfig(model=ModelSettings(emb_dim=30)).resolve(),
            "--emb-dim 30 must be divisible by --n-heads 12",
        ),
        (
            lambda: RunConfig(model=ModelSettings(drop_rate=1.0)).resolve(),
            "--drop-rate must be in [0, 1), got 1.0",
        ),
    ],
)
def test_a_bad_value_is_one_user_error_naming_the_flag(make, message):
    with pytest.raises(UserError) as error:
        make()
    assert str(error.value) == message


def test_the_command_line_is_every_field_and_the_same_flags_as_before(monkeypatch, capsys):
    fields = [
        f.name for prefix, cls in parts() for f in dataclasses.fields(cls) if "flag" in f.metadata
    ]
    flags = sorted("--" + f.replace("_", "-") for f in fields)
    assert set(FLAGS_BEFORE) <= set(flags) and len(set(flags)) == len(flags)
    out = run_in_process(V1, ["--help"], monkeypatch, capsys)
    shown = [w.strip("[]").split("=")[0] for w in out.stdout.split() if w.startswith("[--")]
    assert sorted(shown) == flags
    config, _ = train.parse_args(["--lr", "1e-3", "--data", "x.txt", "--qkv-bias", "--stride", "7"])
    data, model = DataSettings(data=Path("x.txt"), stride=7), ModelSettings(qkv_bias=True)
    assert config == RunConfig(data=data, model=model, train=TrainSettings(lr=1e-3))


def test_a_config_is_plain_data_that_round_trips(tmp_path):
    config = RunConfig(data=DataSettings(data=Path("/d/x.txt")), train=TrainSettings(lr=2e-3))
    torch.save({"run": config.to_dict()}, tmp_path / "c.pt")
    saved = torch.load(tmp_path / "c.pt", weights_only=True)["run"]
    assert RunConfig.from_dict(saved) == config
    assert json.loads(json.dumps(saved)) == saved


def test_train_run_from_python_returns_the_model_and_its_losses(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = RunConfig(
        model=ModelSettings(context_length=32, emb_dim=32, n_layers=1, n_heads=2),
        train=TrainSettings(batch_size=4, max_steps=4, eval_freq=2, eval_iter=1),
        outputs=OutputSettings(output_dir=tmp_path),
    )
    result = train_run(config)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Ep ")]
    state = result.state
    losses = zip((0, 2), state.train_losses, state.val_losses, strict=True)
    assert printed == [
        f"Ep 1 (Step {s:06d}): Train loss {t:.3f}, Val loss {v:.3f}" for s, t, v in losses
    ]
    assert result.state.step == 4 and not result.interrupted
    assert result.config.train.lr == 4e-4 and result.model.cfg.emb_dim == 32
    assert (tmp_path / "model.safetensors").is_file()


@pytest.mark.slow
def test_checkpoints_store_the_config_and_old_ones_still_resume(tmp_path, monkeypatch, capsys):
    def v1(*args):
        done = run_in_process(V1, args, monkeypatch, capsys)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if line.startswith("Ep ")]

    whole = v1(*TINY, "--max-steps", "6", "--output-dir", tmp_path / "whole")
    v1(*TINY, "--max-steps", "2", "--save-every", "2", "--output-dir", tmp_path / "part")
    ckpt = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert "args" not in ckpt and "settings" not in ckpt
    assert RunConfig.from_dict(ckpt["run"]).train.lr == 1e-3
    assert v1("--resume", tmp_path / "part" / "checkpoint.pt", "--max-steps", "6") == whole[1:]

    # The same checkpoint as the script before RunConfig wrote it: flat "args" (as saved by
    # commit 2dbe5e9 for these flags) and the unused "settings".
    args = json.loads((Path(__file__).parent / "data" / "checkpoint-args-2dbe5e9.json").read_text())
    args |= {"data": str(ROOT / "the-verdict.txt"), "output_dir": str(tmp_path / "old")}
    legacy = {k: v for k, v in ckpt.items() if k != "run"} | {"args": args, "settings": {}}
    torch.save(legacy, tmp_path / "legacy.pt")
    assert v1("--resume", tmp_path / "legacy.pt", "--max-steps", "6") == whole[1:]
    assert (tmp_path / "old" / "model.safetensors").is_file()

    (tmp_path / "other.pt").write_bytes(b"")
    torch.save({"model": {}, "config": {}}, tmp_path / "other.pt")
    done = run_in_process(V1, ["--resume", tmp_path / "other.pt"], monkeypatch, capsys)
    assert done.returncode == 2 and done.stderr == (
        f"error: {tmp_path / 'other.pt'}: not a checkpoint of this script\n"
    )


@pytest.mark.slow
def test_v2_model_takes_what_init_from_takes(tmp_path, monkeypatch, capsys, tf_checkpoint):
    """--model FILE and --model FOLDER chat as --checkpoint and --checkpoint-dir do."""
    from mygpt import GPTModel, save_model

    torch.manual_seed(0)
    save_model(
        GPTModel(GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=1)),
        tmp_path / "m.safetensors",
    )
    folder = tf_checkpoint[0]

    def v2(*args):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Hello\nexit\n")))
        done = run_in_process(
            ROOT / "MyGPT_v2_pretrained.py",
            [*args, "--temperature", "0", "--max-new-tokens", "5"],
            monkeypatch,
            capsys,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert v2("--model", tmp_path / "m.safetensors") == v2(
        "--checkpoint", tmp_path / "m.safetensors"
    )
    assert v2("--model", folder) == v2("--checkpoint-dir", folder)
    assert "Loaded " in v2("--model", tmp_path / "m.safetensors")
