"""The ``sde`` entries of the one model table (:mod:`tpp.table`): importing this module registers them.

``import sde`` does not import it (it stays cheap); the ``sde`` CLI and the tests do. Names:

* series models (input ``[B, L, C]`` with NaN for unobserved values; classification when the data have
  labels, else a forecast of every channel): ``neural-cde``, ``bayesian-neural-cde``, ``neural-ode``, ``lsde``, ``lnsde``,
  ``gsde``, ``gru``, ``ode-rnn``, ``gru-d``;
* latent models of series: ``latent-sde``, ``latent-ode``, ``fractional-latent-sde``, ``scotch`` (structure learning), ``langevin-flow`` and ``poisson-latent-sde`` (spike counts) (ELBO), ``neural-mjp`` (neural Markov jump process),
  ``process-diffusion`` (generative, trained on its denoising loss; exact likelihood by the probability-flow ODE;
  with ``missing="observed"`` it trains on partly observed series and imputes by replacement conditioning;
  ``sde fit`` runs it for forecast and interpolate);
* event models: ``neural-cox-sde`` (SDE-driven Cox process), ``mjp`` (the exact Markov jump process,
  fitted in closed form, saved as its rates);
* spike trains: ``spiking-sde`` (a stochastic spiking network as an event SDE, fitted to observed trains by the
  signature-kernel MMD through exact spike-time gradients; ``sde spiking`` runs it).
"""

from __future__ import annotations

from typing import Any

from tpp.table import Family, ModelSpec, Training, event_shape, register

__all__ = ["NAMES", "SERIES_NAMES", "EVENT_NAMES", "SPIKING_NAMES", "JOINT_CLASSIFIERS", "series_shape"]


def series_shape(data: Any) -> dict[str, Any]:
    """``input_channels``, ``output_size`` and ``task`` of a series batch: classification when it has labels
    (one output per class), else a forecast of every channel."""
    from sde.models import Task

    classes = data.num_classes
    if classes:
        return {"input_channels": int(data.num_channels), "output_size": int(classes), "task": Task.CLASSIFICATION}
    return {"input_channels": int(data.num_channels), "output_size": int(data.num_channels), "task": Task.FORECAST}


def _latent_shape(data: Any) -> dict[str, Any]:
    """``num_channels`` of a series batch (the latent SDE models every channel)."""
    return {"num_channels": int(data.num_channels)}


def _mjp_series_shape(data: Any) -> dict[str, Any]:
    """``obs_dim`` of a series batch (Gaussian emission of every channel)."""
    return {"obs_dim": int(data.num_channels)}


def _jump_shape(data: Any) -> dict[str, Any]:
    """``num_states`` of an event batch whose marks are the states entered."""
    return {"num_states": int(data.num_marks)}


def _classes_shape(data: Any) -> dict[str, Any]:
    """``num_classes`` and ``input_channels`` of a labelled series batch."""
    return {"num_classes": int(data.num_classes), "input_channels": int(data.num_channels)}


def _mjp(params: dict[str, Any]) -> Any:
    from sde.models import MarkovJumpProcess

    rates = params["rates"]
    return MarkovJumpProcess(len(rates), rates)


def _spiking_shape(data: Any) -> dict[str, Any]:
    """``num_neurons`` of spike trains (SpikeTrains, or an event batch whose marks are the neurons)."""
    return {"num_neurons": int(data.num_neurons if hasattr(data, "num_neurons") else data.num_marks)}


def _spiking(params: dict[str, Any]) -> Any:
    from sde.models.spiking import SpikingSDE

    return SpikingSDE.from_dict(params)


_S, _T, _E = Family.SDE, Training.TRAINER, Training.ESTIMATOR
_ENTRIES = [
    ModelSpec("neural-cde", "sde.models:NeuralCDE", _S, "NeuralCDE", _T, series_shape, aliases=("cde",),
              summary="neural controlled differential equation (Kidger et al. 2020)"),
    ModelSpec("bayesian-neural-cde", "sde.models:BayesianNeuralCDE", _S, "BayesianNeuralCDE", _T, series_shape,
              aliases=("bncde",),
              summary="neural CDE with a weight-space SDE posterior over its vector field (Hess et al. 2024)"),
    ModelSpec("lsde", "sde.models:LSDE", _S, "LSDE", _T, series_shape,
              summary="Langevin-type stable neural SDE (Oh, Lim & Kim 2024)"),
    ModelSpec("lnsde", "sde.models:LNSDE", _S, "LNSDE", _T, series_shape,
              summary="linear-noise stable neural SDE (Oh, Lim & Kim 2024)"),
    ModelSpec("gsde", "sde.models:GSDE", _S, "GSDE", _T, series_shape,
              summary="geometric stable neural SDE (Oh, Lim & Kim 2024)"),
    ModelSpec("gru", "sde.models:GRUTime", _S, "GRUTime", _T, series_shape,
              summary="GRU on values, observation mask, per-channel gaps and time"),
    ModelSpec("neural-ode", "sde.models:NeuralODE", _S, "NeuralODE", _T, series_shape,
              summary="ODE-RNN style neural ODE on the control path"),
    ModelSpec("latent-sde", "sde.models:LatentSDE", _S, "LatentSDE", _T, _latent_shape,
              summary="latent SDE of partly observed series, trained on its ELBO (Li et al. 2020)"),
    ModelSpec("latent-ode", "sde.models:LatentODE", _S, "LatentODE", _T, _latent_shape,
              summary="latent ODE with an ODE-RNN encoder, trained on its ELBO (Rubanova et al. 2019)"),
    ModelSpec("langevin-flow", "sde.models:LangevinFlow", _S, "LangevinFlow", _T, _latent_shape, aliases=("langevin",),
              summary="underdamped Langevin latent dynamics, coupled-oscillator potential, Poisson counts (Song et al. 2025)"),
    ModelSpec("poisson-latent-sde", "sde.models:PoissonLatentSDE", _S, "PoissonLatentSDE", _T, _latent_shape,
              summary="latent SDE with a Poisson count emission and KL annealing (Li et al. 2020)"),
    ModelSpec("scotch", "sde.models:SCOTCH", _S, "SCOTCH", _T, _latent_shape,
              summary="structure learning: latent SDE with a graph-masked drift and a Bernoulli graph posterior "
                      "(Wang, Jennings & Gong 2024)"),
    ModelSpec("process-diffusion", "sde.models:ProcessDiffusion", _S, "ProcessDiffusion", _T, _latent_shape,
              aliases=("stochastic-process-diffusion",),
              summary="diffusion of whole series with GP / OU noise over the observation times, exact "
                      "likelihood by the probability-flow ODE; missing='observed' trains on partly observed series "
                      "and imputes; missing='conditional' is the paper's PhysioNet model (CSDI's conditional denoiser "
                      "with GP noise) (Bilos et al. 2023)"),
    ModelSpec("fractional-latent-sde", "sde.models:FractionalLatentSDE", _S, "FractionalLatentSDE", _T, _latent_shape,
              aliases=("fractional-sde",),
              summary="latent SDE driven by Markov-approximated fractional noise, Hurst index from the exact Markov "
                      "(Kalman) likelihood refined by the ELBO (Daems et al. 2024)"),
    ModelSpec("ode-rnn", "sde.models:ODERNN", _S, "ODERNN", _T, series_shape, aliases=("odernn",),
              summary="ODE-RNN: GRU updates at observations, a neural ODE between them (Rubanova et al. 2019)"),
    ModelSpec("gru-d", "sde.models:GRUD", _S, "GRUD", _T, series_shape, aliases=("grud",),
              summary="GRU-D: GRU with input and hidden decay over the gaps (Che et al. 2018)"),
    ModelSpec("neural-mjp", "sde.models:NeuralMJP", _S, "NeuralMJP", _T, _mjp_series_shape,
              defaults={"num_states": 2},
              summary="neural Markov jump process of noisy series (Seifner & Sanchez 2023)"),
    ModelSpec("generative-classifier", "sde.models:GenerativeClassifier", _S, "GenerativeClassifier", _T,
              _classes_shape, summary="Bayes classifier from one latent-sde / neural-mjp per class (sde fit --task classify)"),
    ModelSpec("neural-cox-sde", "sde.models:NeuralCoxSDE", _S, "NeuralCoxSDE", _T, event_shape,
              aliases=("neural-cox",), summary="marked Cox process driven by a latent neural SDE"),
    ModelSpec("mjp", "sde.models:MarkovJumpProcess", _S, "MarkovJumpProcess", _E, _jump_shape, loader=_mjp,
              aliases=("markov-jump-process",), summary="Markov jump process, rates by maximum likelihood"),
    ModelSpec("spiking-sde", "sde.models:SpikingSDE", _S, "SpikingSDE", _E, _spiking_shape, loader=_spiking,
              defaults={"sigma": 0.2}, aliases=("event-sde",),
              summary="stochastic spiking network (event SDE), fitted to spike trains by signature-kernel MMD through "
                      "exact spike-time gradients (Holberg & Salvi 2024)"),
]
for _entry in _ENTRIES:
    register(_entry)

NAMES: tuple[str, ...] = tuple(e.name for e in _ENTRIES)
"""Every sde name, in table order."""
SERIES_NAMES: tuple[str, ...] = tuple(e.name for e in _ENTRIES
                                      if e.shape not in (event_shape, _jump_shape, _classes_shape, _spiking_shape))
"""The models of series batches (``sde fit --model``): neural-cde, bayesian-neural-cde, lsde, lnsde, gsde, gru, neural-ode, latent-sde,
latent-ode, langevin-flow, poisson-latent-sde, scotch, fractional-latent-sde, ode-rnn, gru-d, neural-mjp."""
EVENT_NAMES: tuple[str, ...] = tuple(e.name for e in _ENTRIES if e.shape in (event_shape, _jump_shape))
"""The sde models of event batches: neural-cox-sde, mjp."""
SPIKING_NAMES: tuple[str, ...] = tuple(e.name for e in _ENTRIES if e.shape is _spiking_shape)
"""The models of spike trains (``sde spiking``): spiking-sde."""
JOINT_CLASSIFIERS: dict[str, str] = {"latent-ode": "num_classes"}
"""Latent models of series with their own classifier on the latent state, trained jointly with the ELBO
(Rubanova et al. 2019), and the constructor argument that sets the number of classes: ``sde fit --task
classify`` builds them with it. The other latent models (latent-sde, neural-mjp) classify through
``generative-classifier`` (one model per class, Bayes' rule)."""
