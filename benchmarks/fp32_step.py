"""The fp32 training step of `experiment=tiny_lego` against a straightforward PyTorch one.

    python benchmarks/fp32_step.py [--rounds 5] [--steps 5] [--profile]

Both run the same work in one process, alternating (so a shared machine slows both alike):
4 × 128 ReLU layers, colour and density from position (L = 6 plus the raw input, 39 wide),
64 stratified samples a ray, 1024 rays a step, MSE, Adam. nerf_lab's step is its `NeRFRenderer`
built from the composed config (the Lightning loop around it is what `nerf_lab.bench` times);
the reference is the ~40-line loop below, written as a newcomer would. Prints steps/s of each
(median over rounds), their ratio, and the fp32 matrix-product bound of the step on this CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

N_RAYS, N_SAMPLES, L, DEPTH, WIDTH, NEAR, FAR = 1024, 64, 6, 4, 128, 2.0, 6.0


# --- the reference: a plain tiny NeRF step ---------------------------------------------------
def encode(x: torch.Tensor) -> torch.Tensor:
    bands = [x] + [f(x * 2.0**k) for k in range(L) for f in (torch.sin, torch.cos)]
    return torch.cat(bands, dim=-1)


class ReferenceNeRF(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers, in_dim = [], 3 * (2 * L + 1)
        for _ in range(DEPTH):
            layers += [nn.Linear(in_dim, WIDTH), nn.ReLU()]
            in_dim = WIDTH
        self.mlp = nn.Sequential(*layers, nn.Linear(WIDTH, 4))

    def forward(self, origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        t = torch.linspace(NEAR, FAR, N_SAMPLES + 1)
        t = t[:-1] + torch.rand(origins.shape[0], N_SAMPLES) * (t[1] - t[0])  # stratified
        points = origins[:, None] + directions[:, None] * t[..., None]
        raw = self.mlp(encode(points))
        rgb, sigma = torch.sigmoid(raw[..., :3]), torch.relu(raw[..., 3])
        delta = torch.cat([t[:, 1:] - t[:, :-1], torch.full_like(t[:, :1], 1e10)], dim=-1)
        delta = delta * directions.norm(dim=-1, keepdim=True)
        alpha = 1.0 - torch.exp(-sigma * delta)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
        weights = alpha * trans
        return (weights[..., None] * rgb).sum(-2) + (1.0 - weights.sum(-1, keepdim=True))  # white background


def reference_step(model: nn.Module, optimiser: torch.optim.Optimizer, batch: dict) -> None:
    loss = ((model(batch["origins"], batch["directions"]) - batch["rgb"]) ** 2).mean()
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()


# --- nerf_lab's step -------------------------------------------------------------------------
def nerf_lab_model() -> nn.Module:
    from hydra import compose, initialize_config_dir

    from nerf_lab.config.build import build_module
    from nerf_lab.config.compose import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=tiny_lego"])
    assert (cfg.model.depth, cfg.model.width, cfg.encoding.position.n_freqs, cfg.sampling.n_c) == (DEPTH, WIDTH, L, N_SAMPLES)
    return build_module(cfg).renderer.train()


def nerf_lab_step(model: nn.Module, optimiser: torch.optim.Optimizer, batch: dict) -> None:
    from nerf_lab.nerf.rays import RayBundle

    loss = nn.functional.mse_loss(model(RayBundle(batch["origins"], batch["directions"])).rgb, batch["rgb"])
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()


def random_batch(generator: torch.Generator) -> dict:
    """Rays from cameras 4 units from the origin, looking at it, as Lego's are."""
    origins = torch.nn.functional.normalize(torch.randn(N_RAYS, 3, generator=generator), dim=-1) * 4.0
    directions = -origins / 4.0 + 0.2 * torch.randn(N_RAYS, 3, generator=generator)
    return {"origins": origins, "directions": directions, "rgb": torch.rand(N_RAYS, 3, generator=generator)}


def time_steps(step, model, optimiser, batch, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step(model, optimiser, batch)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="profile 3 steps of nerf_lab's step, by input shape")
    parser.add_argument("--compile", action="store_true", help="also nerf_lab's step with its fields compiled (compile=true)")
    args = parser.parse_args()
    from nerf_lab.training.hardware import keep_freed_memory
    from nerf_lab.analysis.benchmarking import matmul_throughput

    keep_freed_memory()  # as nerf_lab's commands do; the reference gets the same allocator
    torch.manual_seed(0)
    batch = random_batch(torch.Generator().manual_seed(0))
    ours = nerf_lab_model()
    reference = ReferenceNeRF()
    contenders = {
        "nerf_lab": (nerf_lab_step, ours, torch.optim.Adam(ours.parameters(), lr=5e-4)),
        "reference": (reference_step, reference, torch.optim.Adam(reference.parameters(), lr=5e-4)),
    }
    if args.compile:
        compiled = nerf_lab_model()
        compiled.load_state_dict(ours.state_dict())
        compiled.compile_fields()
        contenders["nerf_lab compiled"] = (nerf_lab_step, compiled, torch.optim.Adam(compiled.parameters(), lr=5e-4))
    if args.profile:
        step, model, optimiser = contenders["nerf_lab"]
        time_steps(step, model, optimiser, batch, 2)
        with torch.profiler.profile(record_shapes=True) as profiler:
            time_steps(step, model, optimiser, batch, 3)
        print(profiler.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=40))
        return
    speeds: dict[str, list[float]] = {name: [] for name in contenders}
    for name, (step, model, optimiser) in contenders.items():
        time_steps(step, model, optimiser, batch, 2)  # warm-up
    for _ in range(args.rounds):
        for name, (step, model, optimiser) in contenders.items():
            speeds[name].append(time_steps(step, model, optimiser, batch, args.steps))
    flops = N_RAYS * ours.training_flops_per_ray()
    bound = matmul_throughput(N_RAYS * N_SAMPLES, WIDTH, torch.device("cpu"), torch.float32) / flops
    ours_s, ref_s = statistics.median(speeds["nerf_lab"]), statistics.median(speeds["reference"])
    print(f"CPU, {torch.get_num_threads()} threads, fp32, {args.rounds} rounds of {args.steps} steps, alternating")
    print(f"nerf_lab step:  {ours_s:.2f} steps/s  (rounds: {', '.join(f'{s:.2f}' for s in speeds['nerf_lab'])})")
    print(f"reference step: {ref_s:.2f} steps/s  (rounds: {', '.join(f'{s:.2f}' for s in speeds['reference'])})")
    print(f"nerf_lab / reference: {ours_s / ref_s:.2f}x")
    if "nerf_lab compiled" in speeds:
        compiled_s = statistics.median(speeds["nerf_lab compiled"])
        print(f"nerf_lab compiled: {compiled_s:.2f} steps/s, {compiled_s / ours_s:.2f}x eager")
    print(f"matrix-product bound: {bound:.2f} steps/s ({flops / 1e9:.1f} GFLOP a step); nerf_lab at {ours_s / bound:.0%} of it")


if __name__ == "__main__":
    main()
