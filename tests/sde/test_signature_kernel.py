"""The signature kernel by the Goursat PDE (sde.signature, exported by sde.metrics) and its JAX twin
(sde.jax.signature): closed forms on straight paths, an independent truncated-signature inner product,
symmetry and positivity, the MMD as a two-sample score on Brownian motion with drift, gradients
against finite differences, and torch/JAX equality. All float64, small, seeded."""

import math

import numpy as np
import pytest
import torch
from scipy.special import i0, j0

from sde.metrics import signature_kernel, signature_mmd


def straight(direction, points: int) -> torch.Tensor:
    """The path ``s -> direction * s`` on ``[0, 1]`` at ``points`` equally spaced knots, as a batch of one."""
    s = torch.linspace(0.0, 1.0, points, dtype=torch.float64)[:, None]
    return (s * torch.as_tensor(direction, dtype=torch.float64))[None]


def brownian_with_drift(n: int, drift: float, seed: int, points: int = 16) -> torch.Tensor:
    """``n`` paths of ``drift t + W_t`` on ``[0, 1]`` at ``points`` knots, ``[n, points, 1]``."""
    g = torch.Generator().manual_seed(seed)
    dt = 1.0 / (points - 1)
    steps = drift * dt + math.sqrt(dt) * torch.randn(n, points - 1, 1, generator=g, dtype=torch.float64)
    return torch.cat([torch.zeros(n, 1, 1, dtype=torch.float64), steps.cumsum(1)], dim=1)


def truncated_signature(path: np.ndarray, depth: int) -> list[np.ndarray]:
    """Levels 0..depth of the signature of a piecewise-linear path ``[L, D]``, by Chen's identity: the
    product of the segments' tensor exponentials ``exp(v) = sum_k v^{(x)k} / k!`` in the truncated algebra."""
    D = path.shape[1]
    sig = [np.ones(())] + [np.zeros((D,) * k) for k in range(1, depth + 1)]
    for v in np.diff(path, axis=0):
        seg = [np.ones(())]
        for k in range(1, depth + 1):
            seg.append(np.multiply.outer(seg[-1], v) / k)
        sig = [sum(np.multiply.outer(sig[i], seg[k - i]) for i in range(k + 1)) for k in range(depth + 1)]
    return sig


# ---------------------------------------------------------------- closed forms and an independent check
def test_straight_paths_match_the_bessel_closed_form():
    """x(s) = a s, y(t) = b t: k = sum_n <a,b>^n / (n!)^2 = I_0(2 sqrt(<a,b>)) (<a,b> > 0). The scheme is
    second order (error ~ C h^2, falling 4x per dyadic order), so 20 knots and dyadic order 4 (a 304-cell
    side) put it at 1.7e-7 relative (order 3: 6.7e-7): 1e-6 asserts that with a 6x margin."""
    a, b = [0.6, 0.8, 0.0], [1.0, 0.5, 0.3]
    c = float(np.dot(a, b))
    exact = i0(2.0 * math.sqrt(c))
    value = float(signature_kernel(straight(a, 20), straight(b, 20), dyadic_order=4)[0, 0])
    assert abs(value / exact - 1.0) < 1e-6
    errors = [abs(float(signature_kernel(straight(a, 10), straight(b, 10), dyadic_order=o)[0, 0]) / exact - 1)
              for o in range(4)]
    assert all(later < earlier / 3 for earlier, later in zip(errors, errors[1:]))  # second order: ~4x per order


def test_straight_paths_with_negative_product_match_j0():
    """<a, b> < 0: the same series alternates, sum_n (-|c|)^n / (n!)^2 = J_0(2 sqrt(|c|))."""
    a, b = [1.0, -0.5], [-0.8, 0.4]
    c = float(np.dot(a, b))
    value = float(signature_kernel(straight(a, 20), straight(b, 20), dyadic_order=4)[0, 0])
    assert abs(value - j0(2.0 * math.sqrt(-c))) < 1e-6


def test_matches_a_truncated_signature_inner_product():
    """Random short paths: the untruncated PDE kernel equals sum_{k<=8} <S^k(x), S^k(y)> computed from the
    signatures themselves (Chen's identity, no PDE). The level-9 tail is below (|x|_1 |y|_1)^9 / (9!)^2 ~ 1e-11
    for these paths; the PDE at dyadic order 5 is within ~1e-6 (second order), asserted at 5e-6."""
    rng = np.random.default_rng(0)
    X = rng.normal(scale=0.3, size=(3, 4, 2))
    Y = rng.normal(scale=0.3, size=(2, 5, 2))
    gram = signature_kernel(torch.as_tensor(X), torch.as_tensor(Y), dyadic_order=5).numpy()
    for p in range(3):
        sx = truncated_signature(X[p], 8)
        for q in range(2):
            sy = truncated_signature(Y[q], 8)
            truncated = sum(float(np.sum(u * v)) for u, v in zip(sx, sy))
            assert gram[p, q] == pytest.approx(truncated, abs=5e-6, rel=5e-6)


def test_symmetric_and_positive_on_the_diagonal():
    rng = np.random.default_rng(1)
    X = torch.as_tensor(rng.normal(scale=0.5, size=(5, 6, 3)))
    for options in ({}, {"static_kernel": "rbf", "sigma": 0.8}, {"time_augment": True, "basepoint": True}):
        full = signature_kernel(X, X, **options)
        assert torch.allclose(full, full.T, rtol=1e-12, atol=1e-12)
        assert torch.allclose(signature_kernel(X, **options), full, rtol=1e-12, atol=1e-12)  # the half-work path
        assert bool((torch.diagonal(full) > 0).all())
        assert float(torch.linalg.eigvalsh(full).min()) > -1e-8  # a kernel: positive semidefinite Gram
    Y = torch.as_tensor(rng.normal(scale=0.5, size=(4, 9, 3)))  # different lengths: k(x, y) = k(y, x)
    assert torch.allclose(signature_kernel(X, Y), signature_kernel(Y, X).T, rtol=1e-12, atol=1e-12)


def test_paths_are_taken_as_given():
    """Nothing is added unless asked: a 1-D path without a time channel is seen through its total increment
    only (its signature is exp(dx): k = sum_n (dx dy)^n / (n!)^2 = J_0(2 sqrt(-dx dy)) here, dx dy = -0.16),
    and time_augment / basepoint change the value (what they add is documented)."""
    x = torch.tensor([[[0.0], [0.7], [-0.2], [0.4]]], dtype=torch.float64)
    y = torch.tensor([[[1.0], [0.1], [0.6]]], dtype=torch.float64)
    plain = float(signature_kernel(x, y, dyadic_order=4)[0, 0])
    assert plain == pytest.approx(j0(2.0 * math.sqrt(0.16)), abs=1e-5)
    assert float(signature_kernel(x, y, time_augment=True)[0, 0]) != pytest.approx(plain, rel=1e-3)
    assert float(signature_kernel(x, y, basepoint=True)[0, 0]) != pytest.approx(plain, rel=1e-3)
    one_point = signature_kernel(x[:, :1], y)
    assert float(one_point[0, 0]) == 1.0  # a constant path has signature 1


def test_argument_errors_are_clear():
    x = torch.zeros(2, 3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\[N, L, D\]"):
        signature_kernel(torch.zeros(3, 2), x)
    with pytest.raises(ValueError, match="same number of channels"):
        signature_kernel(x, torch.zeros(2, 3, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="static_kernel"):
        signature_kernel(x, x, static_kernel="poly")
    with pytest.raises(ValueError, match="dyadic_order"):
        signature_kernel(x, x, dyadic_order=-1)
    with pytest.raises(ValueError, match="at least 2 paths"):
        signature_mmd(x[:1], x)


# ---------------------------------------------------------------- the MMD as a two-sample score
def _mmd_from_gram(gram: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> float:
    """The unbiased MMD^2 of two index sets of one pooled Gram matrix."""
    kxx, kyy, kxy = gram[first][:, first], gram[second][:, second], gram[first][:, second]
    n, m = len(first), len(second)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                 - 2 * kxy.mean())


def test_mmd_is_null_for_one_process_and_grows_with_the_drift_change():
    """Two samples of one Brownian motion with drift: MMD^2 below the 95% permutation threshold; a changed
    drift: above it, and larger for a larger change. Time-augmented (a 1-D path alone only shows its end)."""
    n = 40
    samples = [brownian_with_drift(n, 0.5, seed=1), brownian_with_drift(n, 0.5, seed=2),
               brownian_with_drift(n, 1.5, seed=3), brownian_with_drift(n, 3.0, seed=4)]
    pooled = torch.cat(samples)
    gram = signature_kernel(pooled, time_augment=True, dyadic_order=0)
    index = [torch.arange(k * n, (k + 1) * n) for k in range(4)]
    same, small, large = (_mmd_from_gram(gram, index[0], index[k]) for k in (1, 2, 3))
    # the same value through signature_mmd itself (its own Gram blocks)
    direct = float(signature_mmd(samples[0], samples[2], time_augment=True, dyadic_order=0))
    assert direct == pytest.approx(small, rel=1e-10)

    g = torch.Generator().manual_seed(0)
    both = torch.cat([index[0], index[1]])
    null = []
    for _ in range(200):
        perm = both[torch.randperm(2 * n, generator=g)]
        null.append(_mmd_from_gram(gram, perm[:n], perm[n:]))
    threshold = float(np.quantile(null, 0.95))
    assert same < threshold
    assert threshold < small < large
    assert abs(same) < 0.1 * small


def test_biased_mmd_is_the_v_statistic():
    X, Y = brownian_with_drift(6, 0.0, seed=5), brownian_with_drift(5, 1.0, seed=6)
    kxx = signature_kernel(X, X, time_augment=True)
    kyy = signature_kernel(Y, Y, time_augment=True)
    kxy = signature_kernel(X, Y, time_augment=True)
    biased = float(signature_mmd(X, Y, unbiased=False, time_augment=True))
    assert biased == pytest.approx(float(kxx.mean() + kyy.mean() - 2 * kxy.mean()), rel=1e-12)
    assert biased > 0


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("options", [{}, {"static_kernel": "rbf", "sigma": 0.9, "dyadic_order": 0},
                                     {"time_augment": True, "basepoint": True, "dyadic_order": 2}])
def test_gradient_matches_finite_differences(options):
    g = torch.Generator().manual_seed(7)
    X = (0.4 * torch.randn(3, 4, 2, generator=g, dtype=torch.float64)).requires_grad_()
    Y = (0.4 * torch.randn(2, 5, 2, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: signature_kernel(x, y, **options), (X, Y))
    assert torch.autograd.gradcheck(lambda x, y: signature_mmd(x, y, **options), (X, Y))
    assert torch.autograd.gradcheck(lambda x: signature_kernel(x, **options), (X,))  # the symmetric half


@pytest.mark.parametrize("order", [0, 2])
def test_compiled_loops_equal_the_torch_loop(order, monkeypatch):
    """The CPU path (numba loops, gradients by the discrete adjoint; for the linear kernel fed straight from
    the paths' increments) and the vectorised torch loop (the GPU path, gradients by autograd) give the same
    values and gradients, in both orientations of the grid and in float32."""
    import sde.signature as signature

    g = torch.Generator().manual_seed(8)
    X = (0.4 * torch.randn(3, 4, 2, generator=g, dtype=torch.float64)).requires_grad_()
    Y = (0.4 * torch.randn(4, 7, 2, generator=g, dtype=torch.float64)).requires_grad_()
    results = {}
    for loop in ("compiled", "torch"):
        if loop == "torch":
            monkeypatch.setattr(signature, "_compiled_applies", lambda cells: False)
        for options in ({"dyadic_order": order}, {"dyadic_order": order, "static_kernel": "rbf", "sigma": 0.8}):
            for first, second in ((X, Y), (Y, X)):
                gram = signature_kernel(first, second, **options)
                mmd = signature_mmd(first, second, **options)
                grads = torch.autograd.grad(mmd + gram.sum(), (first, second))
                results.setdefault(loop, []).append((gram.detach(), mmd.detach(), *grads))
                if loop == "compiled":
                    single = signature_kernel(first.detach().float(), second.detach().float(), **options)
                    assert single.dtype == torch.float32
                    torch.testing.assert_close(single.double(), gram.detach(), rtol=1e-5, atol=1e-5)
    for compiled, loop in zip(results["compiled"], results["torch"]):
        for a, b in zip(compiled, loop):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- the JAX twin
def test_jax_twin_equals_torch():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    # each call compiles one small program once: XLA's heavy optimisation passes cost more than they save
    jax.config.update("jax_disable_most_optimizations", True)
    import sde.jax.signature as js

    rng = np.random.default_rng(3)
    X = rng.normal(scale=0.4, size=(4, 6, 2))
    Y = rng.normal(scale=0.4, size=(3, 8, 2))
    torch_gram = signature_kernel(torch.as_tensor(X), torch.as_tensor(Y)).numpy()
    np.testing.assert_allclose(np.asarray(js.signature_kernel(X, Y)), torch_gram, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(js.signature_kernel(X)), signature_kernel(torch.as_tensor(X)).numpy(),
                               rtol=0, atol=1e-10)
    # the MMD and its gradient (a training loss): jax.grad through the scan against torch autograd
    x_t = torch.as_tensor(X).requires_grad_()
    torch_mmd = signature_mmd(x_t, torch.as_tensor(Y))
    torch_mmd.backward()
    jax_mmd, grad_jax = jax.value_and_grad(lambda x: js.signature_mmd(x, Y))(X)
    assert float(jax_mmd) == pytest.approx(float(torch_mmd.detach()), abs=1e-10)
    np.testing.assert_allclose(np.asarray(grad_jax), x_t.grad.numpy(), rtol=0, atol=1e-10)
    # the other options: rbf, both augmentations, refinement, the biased MMD
    options = {"static_kernel": "rbf", "sigma": 0.7, "time_augment": True, "basepoint": True, "dyadic_order": 2}
    np.testing.assert_allclose(np.asarray(js.signature_kernel(X, Y, **options)),
                               signature_kernel(torch.as_tensor(X), torch.as_tensor(Y), **options).numpy(),
                               rtol=0, atol=1e-10)
    assert float(js.signature_mmd(X, Y, unbiased=False, **options)) == pytest.approx(
        float(signature_mmd(torch.as_tensor(X), torch.as_tensor(Y), unbiased=False, **options)), abs=1e-10)
