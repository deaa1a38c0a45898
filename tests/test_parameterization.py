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
