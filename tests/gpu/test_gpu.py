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

from nerf_lab.nerf.marching import render_in_chunks
from nerf_lab.nerf.renderer import NeRFRenderer
from nerf_lab.nerf.rays import RayBundle, image_rays
from nerf_lab.training.hardware import render_chunk

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False here"
)
on_gpu = [pytest.mark.gpu, requires_cuda]

# A camera 4 units from the origin looking at it, as Lego's are; focal for a 40° view at 800 px.
POSE = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -4], [0, 1, 0, 0], [0, 0, 0, 1]])
FOCAL_800 = 1111.0


def paper_model(depth: int = 8, width: int = 256, n_fine: int = 128, seed: int = 0) -> NeRFRenderer:
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
    assert out.weights.dtype == out.rgb.dtype == torch.float32

    edges = torch.linspace(2.0, 6.0, 65, device=device, dtype=torch.float64)
    norms = rays.directions.reshape(-1, 3).double().norm(dim=-1, keepdim=True)
    optical_depth = captured["density"].double() * (edges[1:] - edges[:-1]) * norms  # σ_i δ_i
    before = torch.cumsum(optical_depth, dim=-1) - optical_depth  # Σ_{j<i} σ_j δ_j
    expected = torch.exp(-before) * (1.0 - torch.exp(-optical_depth))  # w_i = T_i α_i
    torch.testing.assert_close(out.weights.double(), expected, rtol=1e-5, atol=1e-6)
    expected_rgb = (expected[..., None] * captured["rgb"].double()).sum(-2) + 1.0 - expected.sum(-1, keepdim=True)
    torch.testing.assert_close(out.rgb.double(), expected_rgb, rtol=1e-5, atol=1e-5)


def render_float64(model: NeRFRenderer, rays: RayBundle) -> torch.Tensor:
    """`model`'s render of `rays` wholly in float64 (the sample edges and offsets the sampler
    makes with torch's default dtype too); the model is left in float64."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return render_in_chunks(model.double(), RayBundle(rays.origins.double(), rays.directions.double()), chunk=1024).rgb
    finally:
        torch.set_default_dtype(default)


def blocked_cumsum(original):
    """torch.cumsum adding in another order, as a GPU's parallel scan does: a scan inside blocks
    of 8 values, then each block's offset (the sums before it) added. The same sums, rounded
    differently."""

    def cumsum(x: torch.Tensor, dim: int = -1, **kwargs) -> torch.Tensor:
        assert dim in (-1, x.dim() - 1)
        n = x.shape[-1]
        blocks = torch.nn.functional.pad(x, (0, -n % 8)).reshape(*x.shape[:-1], -1, 8)
        inner = original(blocks, dim=-1)
        offsets = original(inner[..., -1], dim=-1) - inner[..., -1]
        return (inner + offsets[..., None]).reshape(*x.shape[:-1], -1)[..., :n]

    return cumsum


def test_a_float64_render_does_not_depend_on_the_order_of_its_sums(monkeypatch):
    """Why CUDA and CPU float64 renders differed by up to 6.6e-4 (H200, 2026-12-04), reproduced
    on the CPU: the compositing cast its inputs to float32, so a "float64" render's weights
    carried float32 rounding, and a cumulative sum added in another order (a GPU's scan) moved
    them by ~1e-7, which the fine pass, placing its samples from the weights, amplified: up to
    4.7e-4 in 94 % of the values of this 24 × 24 view, as on the H200. Composited in float64,
    the two orders agree to 1e-12 (measured), well within 1e-9."""
    rays = view_rays(24, "cpu")
    plain = render_float64(paper_model(depth=2, width=64), rays)
    monkeypatch.setattr(torch, "cumsum", blocked_cumsum(torch.cumsum))
    reordered = render_float64(paper_model(depth=2, width=64), rays)
    assert plain.dtype == torch.float64 and plain.std() > 0.01
    torch.testing.assert_close(reordered, plain, rtol=0, atol=1e-9)


@pytest.mark.gpu
@requires_cuda
def test_cuda_renders_the_image_the_cpu_renders():
    """The same weights render the same view on the GPU as on the CPU: in float64 to 1e-9 (the
    same computation; float64 throughout, compositing included, so that another order of the
    devices' sums moves it by ~1e-12, see the test above), in float32 each within float32's own error, under bf16 autocast (as
    training runs there) within what bf16's 8-bit mantissa allows.

    Float32 cannot promise 1e-4 here, on either device. The CPU's own float32 render is up to
    3.0e-3 from its float64 one (mean 2.7e-5; 425 of 6912 values beyond 1e-4; measured on an AMD
    EPYC, 2026-11-30): rounding at float32's 2^-24 is amplified by the fine pass, whose samples
    the inverse CDF of the coarse weights places (`sample_pdf`), so that a rounding-level change
    in a weight moves samples across a sharp surface. The coarse pass alone (`n_fine=0`) is
    within 2.7e-6 of float64. Perturbing each matrix product's output by 2^-24 (another
    accumulation order) moves the CPU render by up to 8.8e-4; moving the ray origins by one
    float32 ulp (a fused multiply-add on the GPU), by up to 2.2e-2. The H200 of 2026-11-29 saw
    CUDA and CPU float32 differ by up to 2.5e-3 (181 values beyond 1e-4), within that. TF32
    matrix products (a 10-bit mantissa), emulated on the CPU, are 1.4e-3 from the float64
    render on average, 50 times float32's 2.7e-5: the test's float32 bound (the CUDA render's
    mean and largest errors at most twice the CPU's) would catch them. Nothing in nerf_lab or
    Lightning turns TF32 on (Lightning only suggests `set_float32_matmul_precision`); the test
    checks that torch's setting is "highest"."""
    assert torch.get_float32_matmul_precision() == "highest"  # full float32 matrix products, no TF32
    model = paper_model()
    rays = view_rays(48, "cpu")
    cpu32 = render_in_chunks(model, rays, chunk=1024).rgb
    assert cpu32.std() > 0.01  # a view with something in it, not a flat grey
    gpu_model, gpu_rays = paper_model().to("cuda"), view_rays(48, "cuda")
    cuda32 = render_in_chunks(gpu_model, gpu_rays, chunk=1024).rgb.cpu()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = render_in_chunks(gpu_model, gpu_rays, chunk=1024).rgb.float().cpu()
    cpu64 = render_float64(model, rays)
    cuda64 = render_float64(gpu_model, gpu_rays).cpu()

    torch.testing.assert_close(cuda64, cpu64, rtol=0, atol=1e-9)  # no real difference between the devices
    cpu_error, cuda_error = (cpu32.double() - cpu64).abs(), (cuda32.double() - cpu64).abs()
    assert cuda_error.mean() <= 2 * cpu_error.mean() and cuda_error.max() <= 2 * cpu_error.max(), (
        f"CUDA float32 off the float64 render by {cuda_error.mean():.2e} on average, {cuda_error.max():.2e} at most; "
        f"the CPU's float32 by {cpu_error.mean():.2e}, {cpu_error.max():.2e}"
    )
    bf16_error = (bf16.double() - cpu64).abs()  # the CPU's bf16 autocast: 3.3e-3 on average, 5.6e-2 at most
    assert bf16_error.mean() < 1e-2 and bf16_error.max() < 0.1


@pytest.mark.gpu
@requires_cuda
def test_training_on_cuda_decreases_the_loss(make_cfg):
    """The real training loop (Lightning, `trainer.precision=auto`, rays drawn on the GPU,
    Adam) on the built-in scene: bf16-mixed is chosen, every step runs on the GPU (parameters
    and batch, seen at the start of each step: Lightning moves the module back to the CPU
    when `fit` ends), and the loss of the last steps is well below that of the first."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from nerf_lab.config.build import build_datamodule, build_module
    from nerf_lab.training.hardware import resolve_precision

    cfg = make_cfg("trainer.accelerator=gpu", "trainer.max_steps=60", "optim=adam_5e-3")
    losses: list[torch.Tensor] = []
    devices: set[str] = set()

    class RecordLossAndDevice(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            devices.update({next(module.parameters()).device.type, batch.origins.device.type, batch.rgb.device.type})

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].detach())  # read after training: no sync in the loop

    precision = resolve_precision("auto", "gpu")
    assert precision == "bf16-mixed"
    module = build_module(cfg)
    trainer = instantiate(
        cfg.trainer, precision=precision, logger=False, callbacks=[RecordLossAndDevice()], limit_val_batches=0,
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert devices == {"cuda"} and losses[0].is_cuda
    values = torch.stack(losses).float().cpu()
    assert len(values) == 60 and torch.isfinite(values).all()
    assert values[-10:].mean() < 0.7 * values[:5].mean(), values


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("sampling", [["sampling=coarse"], ["sampling=hierarchical", "sampling.n_f=16"]], ids=["one pass", "two passes"])
def test_a_training_step_waits_for_the_gpu_nowhere(make_cfg, sampling):
    """No host–device synchronisation in the training step: steps 3 to 8 of the real
    loop (Lightning, the module, Adam and its schedule, rays drawn on the GPU), away from the
    logging interval and the progress bar, run under `torch.cuda.set_sync_debug_mode("error")`,
    which raises at any operation that waits for the GPU (an `.item()`, a `bool()` of a device
    tensor, a `nonzero`). The dense samplers only: the occupancy grid's gather sizes its batch
    on the host, once a step, by design."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from nerf_lab.config.build import build_datamodule, build_module

    cfg = make_cfg("trainer.accelerator=gpu", "trainer.max_steps=10", *sampling, "trainer.log_every_n_steps=1000",
                   "trainer.precision=bf16-mixed")
    checked: list[int] = []

    class SyncDebug(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if 3 <= trainer.global_step < 9:
                torch.cuda.set_sync_debug_mode("error")
                checked.append(trainer.global_step)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("default")

    trainer = instantiate(
        cfg.trainer, logger=False, callbacks=[SyncDebug()], limit_val_batches=0, enable_checkpointing=False,
        enable_progress_bar=False,
    )
    try:
        trainer.fit(build_module(cfg), datamodule=build_datamodule(cfg))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert checked == [3, 4, 5, 6, 7, 8]


@pytest.mark.gpu
@requires_cuda
def test_a_compiled_training_step_gives_the_eager_loss():
    """Three Adam steps of the paper's two-pass model (4 × 128 here: a shorter compilation) on
    4096 rays of a view, under bf16 autocast as training runs on a GPU, with the same
    stratified samples (the same seed before every step): with the fields compiled
    (`compile=true`) the losses are the eager ones within bf16's tolerance (its 8-bit mantissa
    rounds at 2^-8 ≈ 0.4 % relative; compiled kernels round at other points, and the fine
    samples follow the coarse weights, so 2 % is allowed), and both fall. (The same test with
    "cpu" for "cuda" and a 16 × 16 view passed on an AMD EPYC, 2026-11-30.)"""
    import copy

    import torch.nn.functional as F

    eager = paper_model(depth=4, width=128).train().to("cuda")
    compiled = copy.deepcopy(eager)
    compiled.compile_fields()
    view = view_rays(64, "cuda")
    rays = RayBundle(view.origins.reshape(-1, 3), view.directions.reshape(-1, 3))
    with torch.no_grad():
        target = render_in_chunks(paper_model(depth=4, width=128, seed=1).to("cuda"), view, chunk=4096).rgb.reshape(-1, 3)

    def losses(model: NeRFRenderer) -> list[float]:
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
        values = []
        for _ in range(3):
            torch.manual_seed(0)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(rays)
            loss = F.mse_loss(out.rgb, target) + F.mse_loss(out.rgb_coarse, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            values.append(float(loss))
        return values

    # The tests' shape checks (conftest's jaxtyping + beartype hook) off: under torch.compile
    # beartype meets dynamo's fake tensors and fails (a "desynchronization", seen on the CPU).
    # The commands compile without them, as here.
    from jaxtyping import config as jaxtyping_config

    checking = jaxtyping_config.jaxtyping_disable
    jaxtyping_config.update("jaxtyping_disable", True)
    try:
        eager_losses, compiled_losses = losses(eager), losses(compiled)
    finally:
        jaxtyping_config.update("jaxtyping_disable", checking)
    assert compiled_losses == pytest.approx(eager_losses, rel=2e-2), (compiled_losses, eager_losses)
    assert eager_losses[-1] < eager_losses[0] and compiled_losses[-1] < compiled_losses[0]


@pytest.mark.gpu
@requires_cuda
def test_an_800px_view_renders_in_bounded_gpu_memory():
    """A whole 800 × 800 view of the paper's model, in the chunks `sampling.chunk=null` picks
    for this GPU: the memory it takes beyond the model and the outputs stays within the
    chunk's estimate (`render_chunk`: 4 · (63 + 4 · 256) bytes a point, 192 points a ray),
    far below what rendering the 640,000 rays at once would take."""
    model = paper_model().to("cuda")
    rays = view_rays(800, "cuda")
    chunk = render_chunk(torch.device("cuda"), (64 + 128) * 4 * (63 + 4 * 256))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = render_in_chunks(model, rays, chunk)
    torch.cuda.synchronize()
    grown = torch.cuda.max_memory_allocated() - before
    assert out.rgb.shape == (800, 800, 3) and out.rgb.is_cuda
    assert torch.isfinite(out.rgb).all()
    outputs_bytes = 2 * 800 * 800 * 5 * 4  # the outputs, and their pieces before the final cat
    estimate = chunk * 192 * 4 * (63 + 4 * 256)
    assert grown <= estimate + outputs_bytes, f"{grown / 2**30:.2f} GiB for chunks of {chunk} rays"
    print(f"800 × 800 view: chunks of {chunk} rays, {grown / 2**30:.2f} GiB at the peak")


# The paper's fine pass: 192 points a ray of 4 · (63 + 4 · 256) bytes (NeRFRenderer.activation_bytes_per_ray).
PAPER_FINE_RAY_BYTES = 192 * 4 * (63 + 4 * 256)


def test_render_chunk_follows_free_memory(monkeypatch):
    """`sampling.chunk=null`: 8192 rays on a CPU; on a GPU the largest power of two whose
    activations, at 4 · (input + 4 · width) bytes a point, fit in half the memory left (free,
    plus what the allocator holds unused), within [1024, 65536]. The docstring's example: the
    paper's fine pass on an H100 with 78 GB free renders 32,768 rays a chunk."""
    assert render_chunk(torch.device("cpu"), PAPER_FINE_RAY_BYTES) == 8192
    free = {"bytes": 78 * 10**9}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 10**9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    cuda = torch.device("cuda")
    assert render_chunk(cuda, PAPER_FINE_RAY_BYTES) == 32768  # 0.5 · 78e9 / 834,816 B = 46,716 rays fit
    free["bytes"] = 20 * 10**9  # 11,978 fit
    assert render_chunk(cuda, PAPER_FINE_RAY_BYTES) == 8192
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 30 * 10**9)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 * 10**9)  # 28 GB held unused
    assert render_chunk(cuda, PAPER_FINE_RAY_BYTES) == 16384  # 0.5 · 48e9 / 834,816 = 28,749
    free["bytes"], small = 10**12, render_chunk(cuda, 8 * 4 * (3 + 4 * 16))
    assert small == 65536  # the cap, however much would fit
    free["bytes"] = 10**6
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    assert render_chunk(cuda, PAPER_FINE_RAY_BYTES) == 1024  # the floor


def test_a_module_with_chunk_null_renders_in_the_devices_chunks(make_cfg):
    from nerf_lab.config.build import build_module

    module = build_module(make_cfg("sampling.chunk=null"))
    assert module.chunk == 8192  # on the CPU it lives on
    module.chunk = 100  # eval/render's `chunk=` override
    assert module.chunk == 100
