"""Learning-rate schedules, as factories the LightningModule calls with its optimizer and the
trainer's number of steps (config: `optim.scheduler`, `_partial_: true`)."""

from __future__ import annotations

import torch


def exponential_decay(optimizer: torch.optim.Optimizer, max_steps: int, lr_final: float) -> torch.optim.lr_scheduler.ExponentialLR:
    """lr_k = lr · γ^k with γ = (lr_final / lr)^(1 / max_steps): the rate falls from the
    optimizer's `lr` to `lr_final` over `max_steps` steps (the paper: 5e-4 → 5e-5).

    E.g. lr = 1e-3, lr_final = 1e-4, max_steps = 10: γ = 0.1^(1/10) ≈ 0.794, and step 5 uses
    1e-3 · 0.1^(1/2) ≈ 3.16e-4. Stepped once a training step (`interval: step`).
    """
    if max_steps < 1:
        raise ValueError(f"an exponential decay needs max_steps >= 1, got {max_steps}")
    lr = optimizer.param_groups[0]["lr"]
    gamma = (lr_final / lr) ** (1.0 / max_steps)
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
