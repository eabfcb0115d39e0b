"""RLE (heads/rle_loss.py): the flow is a density with the right log-determinant, the loss is the
hand-computed Laplace NLL at the start, fits known residual distributions (the scale of a Laplace,
the shape of a correlated one), and masks like the other losses."""

import math

import pytest
import torch

from depotr.modeling.heads import RealNVP, RLELoss
from depotr.modeling.heads.rle_loss import laplace_log_prob


def _randomise(flow: RealNVP, seed: int, std: float) -> RealNVP:
    """Moves the flow away from the identity: its last layers (which start at zero) become
    N(0, std^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mlp in flow.couplings:
            for p in mlp.layers[-1].parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return flow


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_flow_starts_as_the_identity():
    x = torch.randn(50, 2)
    z, log_det = RealNVP()(x)
    assert torch.equal(z, x) and torch.equal(log_det, torch.zeros(50))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flow_density_integrates_to_one(seed, one_thread):
    """Midpoint rule on [-25, 25]^2, step 0.1, of a flow far from the identity. (The mass outside
    is not zero: a coordinate contracted by all three of its couplings has a Laplace tail of
    scale up to e^3.)"""
    torch.manual_seed(seed)
    flow = _randomise(RealNVP(hidden_dim=16), seed, std=0.3)
    step = 0.1
    axis = torch.arange(-25 + step / 2, 25, step)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    samples = torch.randn(1000, 2, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        total = flow.log_prob(grid).exp().sum().item() * step**2
        z, log_det = flow(samples)
    assert (z - samples).abs().mean() > 0.3 and log_det.abs().mean() > 0.3, "the flow is still near the identity"
    assert total == pytest.approx(1.0, abs=0.005)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flow_log_det_matches_autograd_jacobian(seed):
    flow = _randomise(RealNVP(), seed, std=0.3).double()
    points = torch.randn(8, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    _, log_det = flow(points)
    for point, value in zip(points, log_det):
        jacobian = torch.autograd.functional.jacobian(lambda x: flow(x[None])[0][0], point)
        torch.testing.assert_close(value, torch.linalg.det(jacobian).abs().log())
    assert log_det.abs().max() > 0.1


def test_loss_at_the_start_is_the_laplace_nll():
    """Identity flow: -log P = sum_c log sigma_c + |xbar_c| + log 2, over supervised keypoints."""
    coords = torch.tensor([[[0.5, 0.5], [0.2, 0.3], [0.9, 0.9]]])
    sigmas = torch.tensor([[[0.1, 0.2], [0.05, 0.05], [0.3, 0.3]]])
    target = torch.tensor([[[0.55, 0.45], [0.2, 0.32], [0.0, 0.0]]])
    weights = torch.tensor([[1.0, 1.0, 0.0]])
    first = math.log(0.1) + math.log(0.2) + 0.05 / 0.1 + 0.05 / 0.2 + 2 * math.log(2)
    second = 2 * math.log(0.05) + 0.02 / 0.05 + 2 * math.log(2)
    loss = RLELoss()(coords, sigmas, target, weights)
    torch.testing.assert_close(loss, torch.tensor((first + second) / 2))


def test_sigma_sees_only_the_base_term():
    """The gauge fix: the flow's residual term gives sigma no gradient; mu and the flow get the
    gradient of the full likelihood."""
    rle = RLELoss(_randomise(RealNVP(), 0, std=0.3))
    coords = torch.rand(3, 4, 2, requires_grad=True)
    sigmas = (torch.rand(3, 4, 2) * 0.3 + 0.05).requires_grad_()
    target = torch.rand(3, 4, 2)
    weights = torch.ones(3, 4)
    rle(coords, sigmas, target, weights).backward()
    # Reference: the full NLL -log P = sum log sigma - log P_phi(xbar), by hand.
    c, s = coords.detach().requires_grad_(), sigmas.detach().requires_grad_()
    xbar = (target - c) / s
    full = (s.log().sum(-1) - rle.flow.log_prob(xbar)).mean()
    base = (s.log().sum(-1) - laplace_log_prob((target - c) / s)).mean()
    full_coords_grad, full_sigma_grad = torch.autograd.grad(full, (c, s))
    base_sigma_grad = torch.autograd.grad(base, s)[0]
    torch.testing.assert_close(rle(coords, sigmas, target, weights), full)
    torch.testing.assert_close(coords.grad, full_coords_grad)
    torch.testing.assert_close(sigmas.grad, base_sigma_grad)
    assert (full_sigma_grad - base_sigma_grad).abs().max() > 1e-3  # the flow would have moved sigma


def _fit(sample, steps: int = 300, seed: int = 0):
    """Fits a free scale sigma = sigmoid(logit) (from 0.5) and the flow to residuals drawn by
    ``sample(n) -> (n, 2)`` with Adam (300 steps of 256); returns (sigma, mean NLL on 20000 fresh
    residuals)."""
    torch.manual_seed(seed)
    rle = RLELoss()
    logit = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.Adam([logit, *rle.parameters()], lr=2e-2)
    for _ in range(steps):
        error = sample(256)[:, None]  # (256, 1, 2): mu = 0, mu_g = error
        loss = rle(torch.zeros_like(error), logit.sigmoid().expand_as(error), error, torch.ones(256, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        error = sample(20000)[:, None]
        nll = rle(torch.zeros_like(error), logit.sigmoid().expand_as(error), error, torch.ones(20000, 1)).item()
    return logit.sigmoid().detach(), nll


def test_fitted_scale_of_laplace_residuals_is_their_scale(one_thread):
    """Laplace(0, 0.05) residuals: sigma -> 0.05 and the NLL -> their entropy, 2 (1 + log 0.1)."""
    laplace = torch.distributions.Laplace(0.0, 0.05)
    sigma, nll = _fit(lambda n: laplace.sample((n, 2)))
    torch.testing.assert_close(sigma, torch.full((2,), 0.05), rtol=0.05, atol=0)
    assert nll == pytest.approx(2 * (1 + math.log(0.1)), abs=0.05)


def test_flow_learns_the_residual_of_correlated_residuals(one_thread):
    """e_x ~ Laplace(0.05), e_y = e_x + Laplace(0.01): the product of two Laplaces (the base
    density alone) at best reaches sum_c log(2 E|e_c|) + 1 = -2.57 nats; the true entropy is
    (1 + log 0.1) + (1 + log 0.02) = -4.22. The learned residual must close the gap."""
    wide, narrow = torch.distributions.Laplace(0.0, 0.05), torch.distributions.Laplace(0.0, 0.01)

    def sample(n):
        x = wide.sample((n,))
        return torch.stack((x, x + narrow.sample((n,))), dim=-1)

    reference = sample(200000)
    base_only = (torch.log(2 * reference.abs().mean(0)) + 1).sum().item()
    sigma, nll = _fit(sample)
    assert base_only == pytest.approx(-2.57, abs=0.03)
    assert nll == pytest.approx(2 + math.log(0.1) + math.log(0.02), abs=0.1)
    # sigma is the mean absolute error of each coordinate (the Laplace ML scale).
    torch.testing.assert_close(sigma, reference.abs().mean(0), rtol=0.1, atol=0)


def test_masked_keypoints_give_zero_loss_and_zero_gradient():
    rle = RLELoss(_randomise(RealNVP(), 0, std=0.3))
    coords = torch.rand(2, 5, 2, requires_grad=True)
    sigmas = (torch.rand(2, 5, 2) * 0.3 + 0.01).requires_grad_()
    target = torch.rand(2, 5, 2) * 4 - 2  # masked targets far outside the crop too
    weights = torch.ones(2, 5)
    weights[:, :2] = 0
    loss = rle(coords, sigmas, target, weights)
    loss.backward()
    assert coords.grad[:, :2].abs().sum() == 0 and sigmas.grad[:, :2].abs().sum() == 0
    assert (coords.grad[:, 2:].abs().sum(-1) > 0).all() and (sigmas.grad[:, 2:].abs().sum(-1) > 0).all()
    with torch.no_grad():
        moved = target.clone()
        moved[:, :2] = 100.0
        torch.testing.assert_close(rle(coords, sigmas, moved, weights), loss)
    # Nothing supervised: an exact zero that still backpropagates (zero gradients).
    rle.zero_grad()
    empty = rle(coords, sigmas, target, torch.zeros(2, 5))
    empty.backward()
    assert empty.item() == 0.0 and all(p.grad is not None and not p.grad.any() for p in rle.parameters())


def test_loss_is_float32_under_autocast():
    """The flow runs in float32 even inside an autocast region (bfloat16 would be ~1e-2 off)."""
    coords, sigmas, target = torch.rand(2, 3, 2), torch.rand(2, 3, 2) * 0.5 + 0.1, torch.rand(2, 3, 2)
    rle = RLELoss(_randomise(RealNVP(), 0, std=0.3))
    expected = rle(coords, sigmas, target, torch.ones(2, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = rle(coords, sigmas, target, torch.ones(2, 3))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)
