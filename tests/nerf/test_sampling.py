import torch

from nerf_lab.nerf.sampling import merge_edges, midpoints, sample_pdf, stratified_edges


def test_deterministic_edges_are_equal_intervals():
    edges = stratified_edges(3, 4, near=2.0, far=6.0, perturb=False)
    torch.testing.assert_close(edges, torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0]).expand(3, 5))
    torch.testing.assert_close(midpoints(edges)[0], torch.tensor([2.5, 3.5, 4.5, 5.5]))


def test_stratified_edges_tile_the_range_and_keep_each_point_in_its_stratum():
    torch.manual_seed(0)
    edges = stratified_edges(1000, 16, near=2.0, far=6.0, perturb=True)
    assert (edges[:, 0] == 2.0).all() and (edges[:, -1] == 6.0).all()
    assert (edges[:, 1:] >= edges[:, :-1]).all()
    strata = torch.arange(16) * 0.25 + 2.0
    points = midpoints(edges)
    assert (points >= strata).all() and (points <= strata + 0.25).all()
    # Random, not fixed: the inner edges vary from ray to ray.
    assert edges[:, 1:-1].std(dim=0).min() > 0.01


def test_docstring_example():
    samples = sample_pdf(torch.tensor([2.0, 3.0, 4.0]), torch.tensor([0.0, 1.0]), 2, deterministic=True)
    torch.testing.assert_close(samples, torch.tensor([3.25, 3.75]), atol=1e-3, rtol=0)


def test_hierarchical_samples_are_sorted_in_range_and_follow_the_weights():
    torch.manual_seed(0)
    n_rays, n_coarse, n_fine, near, far = 256, 64, 128, 2.0, 6.0
    edges = stratified_edges(n_rays, n_coarse, near, far, perturb=True)
    spike = torch.randint(0, n_coarse, (n_rays,))
    weights = torch.zeros(n_rays, n_coarse)
    weights[torch.arange(n_rays), spike] = 1.0

    for deterministic in (True, False):
        fine = sample_pdf(edges, weights, n_fine, deterministic=deterministic)
        assert fine.shape == (n_rays, n_fine)
        assert (fine[:, 1:] >= fine[:, :-1]).all()
        assert (fine >= near).all() and (fine <= far).all()
        lower = edges.gather(1, spike[:, None])
        upper = edges.gather(1, spike[:, None] + 1)
        inside = ((fine >= lower) & (fine <= upper)).float().mean()
        assert inside > 0.95  # most fine samples land within the spike's coarse bin


def test_empty_ray_gets_uniform_fine_samples():
    edges = stratified_edges(1, 8, 0.0, 8.0, perturb=False)
    fine = sample_pdf(edges, torch.zeros(1, 8), 8, deterministic=True)
    torch.testing.assert_close(fine, torch.arange(8.0)[None] + 0.5, atol=1e-3, rtol=0)


def test_merged_edges_are_sorted_and_keep_the_range():
    torch.manual_seed(0)
    edges = stratified_edges(10, 8, 2.0, 6.0, perturb=True)
    fine = sample_pdf(edges, torch.rand(10, 8), 16, deterministic=False)
    merged = merge_edges(edges, fine)
    assert merged.shape == (10, 8 + 1 + 16)
    assert (merged[:, 1:] >= merged[:, :-1]).all()
    assert (merged[:, 0] == 2.0).all() and (merged[:, -1] == 6.0).all()


def test_samplers_chosen_by_config_place_their_samples_as_documented():
    from nerf_lab.nerf.rays import RayBundle
    from nerf_lab.nerf.ray_samplers import StratifiedSampler, UniformSampler

    rays = RayBundle(torch.zeros(3, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(3, 3))
    equal = stratified_edges(3, 8, 2.0, 6.0, perturb=False)
    torch.manual_seed(0)
    stratified = StratifiedSampler(8).train().coarse_edges(rays, 2.0, 6.0)
    assert not torch.equal(stratified, equal)  # random inner edges in training ...
    torch.testing.assert_close(StratifiedSampler(8).eval().coarse_edges(rays, 2.0, 6.0), equal)  # ... midpoints in eval
    torch.testing.assert_close(UniformSampler(8).train().coarse_edges(rays, 2.0, 6.0), equal)  # equal intervals always


def test_the_fine_pass_alone_puts_its_intervals_where_the_coarse_weights_are():
    """`fine_union=False`: n_fine + 1 edges drawn from the coarse weights and nothing else. With
    all the weight in one coarse bin [t_i, t_i + δ] and deterministic u_k = (k + ½) / (n + 1),
    edge k is at t_i + u_k · δ (inverse-transform sampling of a uniform bin, up to the pdf's
    1e-5 padding)."""
    from nerf_lab.nerf.ray_samplers import StratifiedSampler

    n_rays, n_coarse, n_fine = 4, 8, 4
    edges = stratified_edges(n_rays, n_coarse, 2.0, 6.0, perturb=False)  # δ = 0.5
    spike = torch.tensor([0, 3, 5, 7])
    weights = torch.zeros(n_rays, n_coarse)
    weights[torch.arange(n_rays), spike] = 1.0
    sampler = StratifiedSampler(n_coarse, n_fine, fine_union=False).eval()
    fine = sampler.fine_edges(edges, weights)
    u = (torch.arange(n_fine + 1) + 0.5) / (n_fine + 1)
    torch.testing.assert_close(fine, 2.0 + 0.5 * spike[:, None] + 0.5 * u, atol=1e-3, rtol=0)
    # The paper's union keeps the coarse edges too: n_coarse + 1 + n_fine edges.
    assert StratifiedSampler(n_coarse, n_fine).eval().fine_edges(edges, weights).shape == (n_rays, n_coarse + 1 + n_fine)
    assert sampler.fine_samples_per_ray == n_fine and sampler.samples_per_ray == n_coarse
