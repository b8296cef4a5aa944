import math

import torch
from conftest import ROOT

from mygpt import (
    GPTConfig,
    GPTModel,
    calc_loss_loader,
    make_optimizer,
    read_text,
    train_model,
    train_val_loaders,
)


def test_short_training_lowers_the_loss(tokenizer):
    text = read_text(ROOT / "the-verdict.txt")[:6000]
    torch.manual_seed(123)
    train_loader, val_loader = train_val_loaders(text, batch_size=4, max_length=32, stride=32)
    cfg = GPTConfig(context_length=32, emb_dim=48, n_heads=4, n_layers=2, drop_rate=0.0)
    model = GPTModel(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    before = calc_loss_loader(train_loader, model.eval(), "cpu")
    assert abs(before - math.log(50257)) < 1.0
    evals, epochs_ended, steps = [], [], []
    history = train_model(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs=3, eval_freq=4, eval_iter=2,
        on_step=lambda e, s: steps.append(s),
        on_eval=lambda *a: evals.append(a),
        on_epoch_end=epochs_ended.append,
    )  # fmt: skip
    n_steps = 3 * len(train_loader)
    assert steps == list(range(n_steps))
    assert epochs_ended == [1, 2, 3]
    assert [e[1] for e in evals] == list(range(0, n_steps, 4))
    assert history.train_losses == [e[2] for e in evals]
    assert history.tokens_seen == [(s + 1) * 4 * 32 for s in range(0, n_steps, 4)]
    after = calc_loss_loader(train_loader, model.eval(), "cpu")
    assert after < before - 2.0
    assert history.train_losses[-1] < history.train_losses[0] - 2.0


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
