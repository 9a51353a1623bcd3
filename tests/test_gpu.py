"""What only a GPU run can show: the CUDA path renders what the CPU renders, keeps the
compositing in float32 under bf16 autocast, learns, and renders an 800 × 800 view in bounded
memory. Marked `gpu` (`pytest -m gpu`); skipped, with the reason, where there is no CUDA device.
The compositing check also runs on the CPU, everywhere."""

from __future__ import annotations

import pytest
import torch

from nerf_lab.nerf.encoding import PositionalEncoding
from nerf_lab.nerf.field import NeRFField
from helpers import renderer

from nerf_lab.nerf.model import NeRFModel, render_in_chunks
from nerf_lab.nerf.rays import RayBundle, image_rays
from nerf_lab.training.hardware import render_chunk

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False here"
)
on_gpu = [pytest.mark.gpu, requires_cuda]

# A camera 4 units from the origin looking at it, as Lego's are; focal for a 40° view at 800 px.
POSE = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -4], [0, 1, 0, 0], [0, 0, 0, 1]])
FOCAL_800 = 1111.0


def paper_model(depth: int = 8, width: int = 256, n_fine: int = 128, seed: int = 0) -> NeRFModel:
    """The paper's model (8 × 256, skip at 4, view-dependent colour, 64 + 128 samples), seeded.
    The density head's weights are drawn wider than the field's own start (which makes density
    nearly uniform), so that weights and colours vary along rays and across the view, and a
    wrong path shows."""
    torch.manual_seed(seed)

    def field() -> NeRFField:
        made = NeRFField(PositionalEncoding(10), PositionalEncoding(4), depth=depth, width=width, skips=(4,) if depth > 5 else ())
        with torch.no_grad():
            made.density_head.weight.normal_(0.0, 2.0 / width**0.5)
        return made

    return renderer(field(), field() if n_fine else None, 64, n_fine, 2.0, 6.0).eval()


def view_rays(size: int, device: torch.device | str) -> RayBundle:
    rays = image_rays(POSE, FOCAL_800 * size / 800, size, size)
    return RayBundle(rays.origins.to(device), rays.directions.to(device))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=on_gpu)])
def test_compositing_stays_float32_under_bf16_autocast(device):
    """The field runs in bfloat16 under autocast; the weights and colours composited from its
    outputs must be computed in float32: equal, to float32 rounding, to the quadrature redone
    in float64 from the same (bf16) densities. Computed in bfloat16, they would be off by ~1e-2."""
    model = paper_model(depth=2, width=32, n_fine=0).to(device)
    captured = {}
    model.coarse_field.register_forward_hook(lambda module, args, out: captured.update(rgb=out[0], density=out[1]))
    rays = view_rays(16, device)
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16):
        out = model(RayBundle(rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3)))
    assert captured["density"].dtype == torch.bfloat16  # the network did run in bf16
    assert out["weights"].dtype == out["rgb"].dtype == torch.float32

    edges = torch.linspace(2.0, 6.0, 65, device=device, dtype=torch.float64)
    norms = rays.directions.reshape(-1, 3).double().norm(dim=-1, keepdim=True)
    optical_depth = captured["density"].double() * (edges[1:] - edges[:-1]) * norms  # σ_i δ_i
    before = torch.cumsum(optical_depth, dim=-1) - optical_depth  # Σ_{j<i} σ_j δ_j
    expected = torch.exp(-before) * (1.0 - torch.exp(-optical_depth))  # w_i = T_i α_i
    torch.testing.assert_close(out["weights"].double(), expected, rtol=1e-5, atol=1e-6)
    expected_rgb = (expected[..., None] * captured["rgb"].double()).sum(-2) + 1.0 - expected.sum(-1, keepdim=True)
    torch.testing.assert_close(out["rgb"].double(), expected_rgb, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@requires_cuda
def test_cuda_renders_the_image_the_cpu_renders():
    """The same weights render the same view on the GPU (bf16 autocast, as training does
    there) as on the CPU in float32, within what bf16's 8-bit mantissa allows; in float32 on
    the GPU, to float32 rounding."""
    model = paper_model()
    rays = view_rays(48, "cpu")
    reference = render_in_chunks(model, rays, chunk=1024)["rgb"]
    assert reference.std() > 0.01  # a view with something in it, not a flat grey
    gpu_model, gpu_rays = model.to("cuda"), view_rays(48, "cuda")
    fp32 = render_in_chunks(gpu_model, gpu_rays, chunk=1024)["rgb"].cpu()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = render_in_chunks(gpu_model, gpu_rays, chunk=1024)["rgb"].float().cpu()
    torch.testing.assert_close(fp32, reference, rtol=0, atol=1e-4)
    assert (bf16 - reference).abs().mean() < 1e-2 and (bf16 - reference).abs().max() < 0.1


@pytest.mark.gpu
@requires_cuda
def test_training_on_cuda_decreases_the_loss(make_cfg):
    """The real training loop (Lightning, `trainer.precision=auto`, rays drawn on the GPU,
    Adam) on the built-in scene: bf16-mixed is chosen, and the loss of the last steps is well
    below that of the first."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from nerf_lab.training.config import build_datamodule, build_module
    from nerf_lab.training.hardware import resolve_precision

    cfg = make_cfg("trainer.accelerator=gpu", "trainer.max_steps=60", "optim=adam_5e-3")
    losses: list[torch.Tensor] = []

    class RecordLoss(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].detach())  # read after training: no sync in the loop

    precision = resolve_precision("auto", "gpu")
    assert precision == "bf16-mixed"
    module = build_module(cfg)
    trainer = instantiate(
        cfg.trainer, precision=precision, logger=False, callbacks=[RecordLoss()], limit_val_batches=0,
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert next(module.parameters()).is_cuda and losses[0].is_cuda
    values = torch.stack(losses).float().cpu()
    assert len(values) == 60 and torch.isfinite(values).all()
    assert values[-10:].mean() < 0.7 * values[:5].mean(), values


@pytest.mark.gpu
@requires_cuda
def test_an_800px_view_renders_in_bounded_gpu_memory():
    """A whole 800 × 800 view of the paper's model, in the chunks `sampling.chunk=null` picks
    for this GPU: the memory it takes beyond the model and the outputs stays within the
    chunk's estimate (`render_chunk`: 4 · (63 + 4 · 256) bytes a point, 192 points a ray),
    far below what rendering the 640,000 rays at once would take."""
    model = paper_model().to("cuda")
    rays = view_rays(800, "cuda")
    chunk = render_chunk(torch.device("cuda"), 64 + 128, 256, 63)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = render_in_chunks(model, rays, chunk)
    torch.cuda.synchronize()
    grown = torch.cuda.max_memory_allocated() - before
    assert out["rgb"].shape == (800, 800, 3) and out["rgb"].is_cuda
    assert torch.isfinite(out["rgb"]).all()
    outputs_bytes = 2 * 800 * 800 * 5 * 4  # the outputs, and their pieces before the final cat
    estimate = chunk * 192 * 4 * (63 + 4 * 256)
    assert grown <= estimate + outputs_bytes, f"{grown / 2**30:.2f} GiB for chunks of {chunk} rays"
    print(f"800 × 800 view: chunks of {chunk} rays, {grown / 2**30:.2f} GiB at the peak")


def test_render_chunk_follows_free_memory(monkeypatch):
    """`sampling.chunk=null`: 8192 rays on a CPU; on a GPU the largest power of two whose
    activations, at 4 · (input + 4 · width) bytes a point, fit in half the memory left (free,
    plus what the allocator holds unused), within [1024, 65536]. The docstring's example: the
    paper's fine pass on an H100 with 78 GB free renders 32,768 rays a chunk."""
    assert render_chunk(torch.device("cpu"), 192, 256, 63) == 8192
    free = {"bytes": 78 * 10**9}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 10**9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    cuda = torch.device("cuda")
    assert render_chunk(cuda, 192, 256, 63) == 32768  # 0.5 · 78e9 / 834,816 B = 46,716 rays fit
    free["bytes"] = 20 * 10**9  # 11,978 fit
    assert render_chunk(cuda, 192, 256, 63) == 8192
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 30 * 10**9)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * 10**9)  # 28 GB held unused
    assert render_chunk(cuda, 192, 256, 63) == 16384  # 0.5 · 48e9 / 834,816 = 28,749
    free["bytes"], small = 10**12, render_chunk(cuda, 8, 16, 3)
    assert small == 65536  # the cap, however much would fit
    free["bytes"] = 10**6
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    assert render_chunk(cuda, 192, 256, 63) == 1024  # the floor


def test_a_module_with_chunk_null_renders_in_the_devices_chunks(make_cfg):
    from nerf_lab.training.config import build_module

    module = build_module(make_cfg("sampling.chunk=null"))
    assert module.chunk == 8192  # on the CPU it lives on
    module.chunk = 100  # eval/render's `chunk=` override
    assert module.chunk == 100
