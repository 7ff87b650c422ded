"""sde: continuous-time latent models (neural CDEs, stable neural SDEs, latent SDEs, neural MJPs).

The models arrive with their issues; this package already shares the ``tpp`` event data and
protocol (``tpp.process``, ``tpp.events``) they plug into.
"""
