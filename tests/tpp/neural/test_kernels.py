"""The compiled kernels give torch's values and gradients (float64 gradcheck and direct comparison): the
recurrences of :mod:`tpp.neural._recurrences` and the interval integrals of :mod:`tpp.neural._quadrature`."""

import pytest
import torch
from torch import nn

from tpp.neural._recurrences import (
    Recurrence,
    _torch_recurrence,
    ctlstm_states,
    ctlstm_states_reference,
    run_recurrence,
)


def _rnn(kind: Recurrence, input_size: int, hidden: int) -> nn.RNNBase:
    if kind is Recurrence.GRU:
        return nn.GRU(input_size, hidden, batch_first=True).double()
    return nn.RNN(input_size, hidden, batch_first=True,
                  nonlinearity="relu" if kind is Recurrence.RNN_RELU else "tanh").double()


@pytest.mark.parametrize("kind", list(Recurrence))
def test_fused_recurrence_matches_torch_autograd(kind):
    torch.manual_seed(0)
    rnn = _rnn(kind, 5, 4)
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    weights = (x, h0, *(p for p in rnn.parameters()))
    out = run_recurrence(kind, rnn, x, h0)
    reference = _torch_recurrence(kind, x, h0, tuple(rnn.parameters()))
    torch.testing.assert_close(out, reference)
    probe = torch.randn_like(out)
    fused_grads = torch.autograd.grad((out * probe).sum(), weights)
    reference_grads = torch.autograd.grad((reference * probe).sum(), weights)
    for got, want in zip(fused_grads, reference_grads):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda x, h0: run_recurrence(kind, rnn, x, h0), (x, h0))


def test_fused_ctlstm_matches_reference_and_gradcheck():
    torch.manual_seed(1)
    B, L, H = 3, 6, 4
    gx = torch.randn(B, L + 1, 7 * H, dtype=torch.float64, requires_grad=True)
    w_h = (0.5 * torch.randn(7 * H, H, dtype=torch.float64)).requires_grad_()
    gaps = torch.rand(B, L, dtype=torch.float64) * 2
    gaps[0, -2:] = 0.0  # padding steps see zero gaps
    fused = ctlstm_states(gx, w_h, gaps)
    reference = ctlstm_states_reference(gx, w_h, gaps)
    torch.testing.assert_close(fused, reference)
    probe = torch.randn_like(fused)
    got = torch.autograd.grad((fused * probe).sum(), (gx, w_h))
    want = torch.autograd.grad((reference * probe).sum(), (gx, w_h))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda gx, w_h: ctlstm_states(gx, w_h, gaps), (gx, w_h))
    with torch.no_grad():
        torch.testing.assert_close(ctlstm_states(gx, w_h, gaps), reference.detach())


@pytest.mark.parametrize("kind", list(Recurrence))
def test_float32_fast_activations_stay_within_float32_noise(kind):
    """Float32 runs the vectorised rational tanh: outputs and gradients agree with torch to ~1e-5."""
    torch.manual_seed(2)
    rnn = _rnn(kind, 6, 8).float()
    x = torch.randn(4, 30, 6, requires_grad=True)
    h0 = torch.randn(4, 8, requires_grad=True)
    out = run_recurrence(kind, rnn, x, h0)
    reference = _torch_recurrence(kind, x, h0, tuple(rnn.parameters()))
    torch.testing.assert_close(out, reference, atol=2e-5, rtol=1e-4)
    probe = torch.randn_like(out)
    got = torch.autograd.grad((out * probe).sum(), (x, h0, *rnn.parameters()))
    want = torch.autograd.grad((reference * probe).sum(), (x, h0, *rnn.parameters()))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(run_recurrence(kind, rnn, x, h0), reference.detach(), atol=2e-5, rtol=1e-4)


def test_float32_ctlstm_fast_activations():
    torch.manual_seed(3)
    B, L, H = 4, 40, 8
    gx = torch.randn(B, L + 1, 7 * H, requires_grad=True)
    w_h = (0.5 * torch.randn(7 * H, H)).requires_grad_()
    gaps = torch.rand(B, L) * 3
    fused = ctlstm_states(gx, w_h, gaps)
    reference = ctlstm_states_reference(gx, w_h, gaps)
    torch.testing.assert_close(fused, reference, atol=2e-5, rtol=1e-4)
    probe = torch.randn_like(fused)
    got = torch.autograd.grad((fused * probe).sum(), (gx, w_h))
    want = torch.autograd.grad((reference * probe).sum(), (gx, w_h))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("kind", list(Recurrence))
def test_history_embedding_table_path_matches_concatenated_input(kind):
    """RecurrentHistory on CPU projects (mark embedding, time feature) through a [K + 1, G] table; values and
    every parameter's gradient equal those of torch's recurrence on the concatenated input (padding too)."""
    from tpp.neural.layers import RecurrentHistory

    torch.manual_seed(3)
    history = RecurrentHistory(4, 5, embedding_size=3, cell=kind).double()
    with torch.no_grad():
        history.h0.normal_()
    mark = torch.randint(0, 4, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    feature = torch.randn(3, 6, dtype=torch.float64)
    out = history(mark, mask, feature)
    x = torch.cat([history.embedding(mark, mask), feature[..., None]], -1)
    h0 = history.h0.expand(3, -1)
    reference = torch.cat([history.h0.expand(3, 1, -1),
                           _torch_recurrence(kind, x, h0, tuple(history.rnn.parameters()))], 1)
    torch.testing.assert_close(out, reference)
    params = list(history.parameters())
    probe = torch.randn_like(out)
    got = torch.autograd.grad((out * probe).sum(), params)
    want = torch.autograd.grad((reference * probe).sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert float(got[1][4].abs().sum()) == 0.0 and float(got[1][:4].abs().sum()) > 0  # the embedding's padding row gets no gradient


@pytest.mark.parametrize("name", ["SAHP", "THP"])
def test_fused_interval_integrals_match_the_torch_rule(name):
    """SAHP's and THP's compiled compensators equal the base class's Gauss-Legendre rule in torch, values and
    every parameter's gradient (float64), pass gradcheck, and agree to float32 noise in float32."""
    import tpp.neural
    from tpp.compensator import interval_bounds
    from tpp.hawkes import ExpHawkes
    from tpp.neural.base import StateTPP

    batch = ExpHawkes.from_params([0.3, 0.2, 0.1], [[0.3, 0.1, 0.0], [0.1, 0.3, 0.1], [0.0, 0.2, 0.3]], 1.5).sample(
        5, 30.0, generator=0)
    left, right, _ = interval_bounds(batch)
    tau = right - left
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        torch.manual_seed(0)
        model = getattr(tpp.neural, name)(3, 8).to(dtype)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
        context = model.encode(batch)
        fused = model.integrate_after(context, tau)
        reference = StateTPP.integrate_after(model, context, tau)
        torch.testing.assert_close(fused.double(), reference.double(), rtol=tol, atol=tol)
        params = list(model.parameters())
        got = torch.autograd.grad(fused.sum(), params, retain_graph=True)
        want = torch.autograd.grad(reference.sum(), params)
        for a, b in zip(got, want):
            torch.testing.assert_close(a.double(), b.double(), rtol=10 * tol, atol=10 * tol)
    state = context.detach().double()
    tau = tau.double()
    if name == "THP":  # the last channel is the time scale, a function of the event times only
        alpha, log_scale = (p.detach().double().requires_grad_() for p in (model.alpha, model.softplus.log_scale))
        head = state[..., :-1].clone().requires_grad_()
        from tpp.neural._quadrature import thp_interval_integral

        assert torch.autograd.gradcheck(
            lambda h, a, s: thp_interval_integral(h, state[..., -1], a, s, tau, 8), (head, alpha, log_scale))
    else:
        from tpp.neural._quadrature import sahp_interval_integral

        assert torch.autograd.gradcheck(lambda s: sahp_interval_integral(s, tau, 8), (state.requires_grad_(),))
