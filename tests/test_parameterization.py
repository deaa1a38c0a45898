import pytest
import torch

from dimdiff.process import parameterization as P
from dimdiff.process.gaussian import GaussianProcess
from dimdiff.process.parameterization import Parameterization


def _setup():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    alpha = torch.rand(5, 1, 1, 1, generator=g) * 0.98 + 0.01
    return x0, eps, alpha, (1 - alpha**2).sqrt()


def test_conversions_round_trip():
    x0, eps, alpha, sigma = _setup()
    x_t = alpha * x0 + sigma * eps
    torch.testing.assert_close(P.eps_to_x0(x_t, eps, alpha, sigma), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(P.x0_to_eps(x_t, x0, alpha, sigma), eps, atol=1e-4, rtol=1e-4)
    v = alpha * eps - sigma * x0
    torch.testing.assert_close(P.x0_to_v(x_t, x0, alpha, sigma), v, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(P.v_to_x0(x_t, v, alpha, sigma), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(P.v_to_eps(x_t, v, alpha, sigma), eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(P.eps_to_v(x_t, eps, alpha, sigma), v, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", list(Parameterization))
def test_process_target_and_x0_are_inverse(kind):
    process = GaussianProcess((3, 4, 4))
    x0, eps, _, _ = _setup()
    t = torch.rand(5, dtype=torch.float64) * 0.9 + 0.05
    x_t = process.forward_sample(x0, t, eps)
    target = process.training_target(x0, eps, t, kind)
    torch.testing.assert_close(process.x0_from_prediction(x_t, target, t, kind), x0, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", list(Parameterization))
def test_coefficients_invert_for_any_gain_and_guard_a_vanishing_one(kind):
    """x_t = a x0 + sigma eps with a not tied to sigma (a DVDP component's gain): the target read
    back through x0_coefficients is x0; below eps_tolerance eps-prediction reads the target as x0."""
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
    a = torch.tensor([0.9, 0.3, 0.05, 0.0], dtype=torch.float64)
    sigma = torch.tensor(0.6, dtype=torch.float64)
    x_t = a[:, None] * x0 + sigma * eps
    w_noise, w_x0 = P.target_coefficients(kind, a, sigma, eps_tolerance=0.01)
    target = w_noise[:, None] * eps + w_x0[:, None] * x0
    w_x, w_pred = P.x0_coefficients(kind, a, sigma, eps_tolerance=0.01)
    assert torch.isfinite(w_x).all() and torch.isfinite(w_pred).all()
    torch.testing.assert_close(w_x[:, None] * x_t + w_pred[:, None] * target, x0, atol=1e-12, rtol=0)
    if kind is Parameterization.EPS:
        assert w_noise[-1] == 0 and w_x0[-1] == 1  # a = 0 < tolerance: the target is x0


def test_coefficients_name_a_bad_kind():
    a = torch.tensor(0.5, dtype=torch.float64)
    for fn in (P.x0_coefficients, P.target_coefficients):
        with pytest.raises(ValueError, match="expected a parameterization in"):
            fn("score", a, a)  # type: ignore[arg-type]
