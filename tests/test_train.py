from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import ROOT
from torch.utils.data import DataLoader

from mygpt import (
    Corpus,
    GPTConfig,
    GPTDataset,
    GPTModel,
    Trainer,
    TrainSettings,
    calc_loss_batch,
    calc_loss_loader,
    load_corpus,
    lr_at,
    make_optimizer,
    train_model,
)
from mygpt.book import sample_line
from mygpt.data.windows import WindowOrder

CFG = GPTConfig(context_length=32, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1)


@pytest.fixture(scope="module")
def corpus(tokenizer):
    return load_corpus(ROOT / "the-verdict.txt", tokenizer, 0.9)


def make_trainer(corpus, settings, cfg=CFG, seed=123, **kwargs):
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    optimizer = make_optimizer(
        model, settings.peak_lr, settings.weight_decay, "cpu", settings.decay_matrices_only
    )
    train, val = corpus.windows(cfg.context_length, cfg.context_length, settings.batch_size)
    return Trainer(model, optimizer, train, val, settings, torch.device("cpu"), **kwargs)


def book_train_model_simple(
    model, train_loader, val_loader, optimizer, num_epochs, eval_freq, eval_iter
):
    """The book's loop (chapter 5), written apart from mygpt.training.trainer: the reference."""
    train_losses, val_losses, global_step = [], [], -1
    for _ in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, "cpu")
            loss.backward()
            optimizer.step()
            global_step += 1
            if global_step % eval_freq == 0:
                model.eval()
                with torch.no_grad():
                    train_losses.append(calc_loss_loader(train_loader, model, "cpu", eval_iter))
                    val_losses.append(calc_loss_loader(val_loader, model, "cpu", eval_iter))
                model.train()
    return train_losses, val_losses


@pytest.mark.slow
def test_trainer_reproduces_the_books_dataloader_loop(corpus):
    """Same seed, same dropout masks, same batches: the losses and weights are bit-identical."""
    corpus = Corpus(corpus.train[:2000], corpus.val)  # 62 windows: 15 steps an epoch
    settings = TrainSettings(batch_size=4, epochs=2, eval_freq=4, eval_iter=2, lr=2e-3)
    trainer = make_trainer(corpus, settings)
    trainer.run()

    torch.manual_seed(123)
    model = GPTModel(CFG)
    optimizer = make_optimizer(model, settings.peak_lr, settings.weight_decay, "cpu")
    loaders = [
        DataLoader(GPTDataset(tokens, 32, 32), batch_size=4, shuffle=shuffle, drop_last=shuffle)
        for tokens, shuffle in ((corpus.train, True), (corpus.val, False))
    ]
    train_losses, val_losses = book_train_model_simple(model, *loaders, optimizer, 2, 4, 2)

    assert trainer.state.train_losses == train_losses
    assert trainer.state.val_losses == val_losses
    assert len(train_losses) == 8  # after steps 0, 4, ..., 28
    assert train_losses[-1] < train_losses[0] - 0.5
    for a, b in zip(trainer.model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_gradient_accumulation_matches_a_larger_batch(corpus):
    """4 windows at once, 2 x 2 accumulated, or 4 x 1: the same steps up to round-off."""
    cfg = GPTConfig(context_length=32, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    runs = []
    for batch_size, accum in [(4, 1), (2, 2), (1, 4)]:
        settings = TrainSettings(
            batch_size=batch_size, grad_accum=accum, max_steps=6, eval_freq=2, eval_iter=1, lr=1e-3
        )
        trainer = make_trainer(corpus, settings, cfg)
        trainer.run()
        runs.append(trainer)
    for other in runs[1:]:
        assert other.state.tokens_seen == runs[0].state.tokens_seen == 6 * 4 * 32
        for a, b in zip(other.model.parameters(), runs[0].model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=2e-5)


@pytest.mark.slow
def test_resume_continues_exactly(corpus):
    """Stopped after step 5, saved, restored into a new model: the rest is the same run."""
    settings = TrainSettings(
        batch_size=4,
        max_steps=14,
        eval_freq=2,
        eval_iter=2,
        warmup_steps=3,
        lr_decay="cosine",
        grad_clip=1.0,
    )
    whole = make_trainer(corpus, settings)
    assert whole.run()

    first = make_trainer(corpus, settings)
    assert not first.run(stop=lambda: first.state.step == 5)
    saved = first.state_dict()
    assert saved["state"]["step"] == 5
    second = make_trainer(corpus, settings, seed=999)  # other weights until restored
    second.load_state_dict(saved)
    assert second.run()

    assert second.state.train_losses == whole.state.train_losses
    assert second.state.val_losses == whole.state.val_losses
    for a, b in zip(second.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_other_data(corpus):
    settings = TrainSettings(batch_size=4, max_steps=2)
    saved = make_trainer(corpus, settings).state_dict()
    other = make_trainer(Corpus(corpus.train[:-100], corpus.val), settings)
    with pytest.raises(Exception, match="other data"):
        other.load_state_dict(saved)


def test_learning_rate_schedule():
    s = TrainSettings(lr=1e-3, warmup_steps=4, lr_decay="cosine", min_lr=1e-4)
    lrs = [lr_at(step, s, total_steps=14) for step in range(15)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4] == pytest.approx(1e-3)
    assert lrs[9] == pytest.approx(5.5e-4)  # half way: the mean of lr and min_lr
    assert lrs[14] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lr_at(100, TrainSettings(lr=3e-4), 10) == 3e-4  # the book's constant rate


def test_weight_decay_on_matrices_only():
    model = GPTModel(CFG)
    everything = make_optimizer(model, 1e-3, 0.1, "cpu")
    assert [g["weight_decay"] for g in everything.param_groups] == [0.1]
    split = make_optimizer(model, 1e-3, 0.1, "cpu", decay_matrices_only=True)
    decayed, not_decayed = split.param_groups
    assert decayed["weight_decay"] == 0.1 and not_decayed["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[-1] for p in not_decayed["params"]} == {
        "scale",
        "shift",
        "bias",
    }
    assert "tok_emb.weight" in {names[id(p)] for p in decayed["params"]}
    assert len(decayed["params"]) + len(not_decayed["params"]) == len(names)


def test_gradient_clipping(corpus):
    settings = TrainSettings(batch_size=4, max_steps=1, grad_clip=0.05)
    trainer = make_trainer(corpus, settings)
    trainer.run()
    grads = [p.grad for p in trainer.model.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert norm.item() == pytest.approx(0.05, rel=1e-4)  # untrained: far above 0.05 before


def test_fused_optimizer_matches_plain_adamw():
    """The fused AdamW the scripts use follows the same trajectory as torch's default AdamW."""
    cfg = GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=4, n_layers=2)
    x, y = torch.randint(0, 300, (2, 4, 16))
    losses = []
    for fused in (False, True):
        torch.manual_seed(5)
        model = GPTModel(cfg)
        if fused:
            optimizer = make_optimizer(model, lr=4e-4, weight_decay=0.1, device="cpu")
            assert optimizer.defaults["fused"]
        else:
            optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
        run = []
        for _ in range(10):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            loss.backward()
            optimizer.step()
            run.append(loss.item())
        losses.append(run)
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-5)
    assert losses[0][-1] < losses[0][0] - 0.1


@pytest.mark.slow
def test_bfloat16_autocast_trains(corpus):
    """bfloat16 autocast: weights stay float32 and the losses follow float32's closely."""
    from mygpt.devices import make_autocast

    losses = []
    for dtype in ("float32", "bfloat16"):
        settings = TrainSettings(batch_size=4, max_steps=8, eval_freq=7, eval_iter=2, lr=1e-3)
        trainer = make_trainer(corpus, settings, autocast=make_autocast(torch.device("cpu"), dtype))
        trainer.run()
        assert trainer.model.tok_emb.weight.dtype == torch.float32
        losses.append(np.array(trainer.state.train_losses))
    assert np.abs(losses[1] - losses[0]).max() < 0.05


def test_train_model_is_the_books_loop(corpus, tokenizer, capsys):
    """mygpt.train_model over DataLoaders: the book's numbers, and v1's printed lines."""
    corpus = Corpus(corpus.train[:1000], corpus.val)  # 31 windows of 32: 7 steps an epoch

    def run(loop):
        torch.manual_seed(123)
        model = GPTModel(CFG)
        optimizer = make_optimizer(model, 2e-3, 0.1, "cpu")
        loaders = [
            DataLoader(GPTDataset(tokens, 32, 32), batch_size=4, shuffle=shuffle, drop_last=shuffle)
            for tokens, shuffle in ((corpus.train, True), (corpus.val, False))
        ]
        return loop(model, *loaders, optimizer), model

    (ours, model), (book, reference) = (
        run(lambda m, t, v, o: train_model(m, t, v, o, "cpu", 2, 3, 2, "Every effort", tokenizer)),
        run(lambda m, t, v, o: book_train_model_simple(m, t, v, o, 2, 3, 2)),
    )
    train_losses, val_losses, tokens_seen = ours
    assert (train_losses, val_losses) == book
    assert tokens_seen == [128, 512, 896, 1280, 1664]  # after steps 0, 3, 6, 9, 12 of 4 x 32
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == f"Ep 1 (Step 000000): Train loss {train_losses[0]:.3f}, Val loss "
        f"{val_losses[0]:.3f}"
    )
    assert [line[:18] for line in lines if line.startswith("Ep")] == [
        "Ep 1 (Step 000000)",
        "Ep 1 (Step 000003)",
        "Ep 1 (Step 000006)",
        "Ep 2 (Step 000009)",
        "Ep 2 (Step 000012)",
    ]
    samples = [line for line in lines if line.startswith(">>> ")]
    assert len(samples) == 2 and samples[1] == sample_line(model, tokenizer, "Every effort")


def test_window_order_lays_out_a_global_batch():
    """2 processes x 2 accumulation passes x 3 windows: one process reads what 12 rows would."""
    one = WindowOrder(30, batch_size=12)
    order = one.shuffled(7)
    assert sorted(order) == list(range(30)) and one.steps_per_epoch == 2
    for step in range(2):
        rows = []
        for accum_pass in range(2):
            for rank in range(2):
                part = WindowOrder(30, 3, grad_accum=2, world_size=2, rank=rank)
                rows += part.rows(part.shuffled(7), step, accum_pass)
        assert rows == one.rows(order, step)
    draws = iter([11, 22, 33])
    assert WindowOrder.draw_seed(lambda: next(draws)) == 22  # the loader's seed, then the sampler's
    assert WindowOrder.draw_seed(lambda: next(draws), shuffle=False) is None


def test_step_callback_gets_the_learning_rate_and_gradient_norm(corpus):
    settings = TrainSettings(batch_size=4, max_steps=3, warmup_steps=2, eval_freq=100)
    seen = {}
    for clip in (None, 1e-3):
        trainer = make_trainer(corpus, replace(settings, grad_clip=clip))
        reports = []
        trainer.run(on_step=lambda state, lr, norm: reports.append((lr, float(norm))))  # noqa: B023
        seen[clip] = reports
    lrs = [lr for lr, _ in seen[None]]
    assert lrs == [lr_at(step, settings, 3) for step in range(3)] == [2e-4, 4e-4, 4e-4]
    norms = [norm for _, norm in seen[None]]
    assert all(norm > 1e-3 for norm in norms)
    assert seen[1e-3][0][1] == norms[0]  # the norm before clipping; the same first step
    assert seen[1e-3][1][1] != norms[1]  # clipping changed the first update
