"""Neural temporal point processes on the shared protocol: each model is a small file."""

from tpp.neural.attnhp import AttNHP
from tpp.neural.base import NeuralTPP
from tpp.neural.fullynn import FullyNN
from tpp.neural.intensity_free import IntensityFree
from tpp.neural.nhp import NHP
from tpp.neural.rmtpp import RMTPP
from tpp.neural.sahp import SAHP
from tpp.neural.thp import THP

__all__ = ["NeuralTPP", "RMTPP", "NHP", "THP", "SAHP", "AttNHP", "FullyNN", "IntensityFree"]
