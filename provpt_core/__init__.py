"""PRO-VPT and its baselines on a frozen timm ViT: torch + timm only.

A trial runs from a `TrialConfig` alone::

    from provpt_core import TrialConfig, fit
    result = fit(TrialConfig.from_dict({...}), data)
"""

from provpt_core.engine import Callback, DivergedError, FitResult, Trainer, fit
from provpt_core.trial import EvalConfig, TrainConfig, TrialConfig

__all__ = [
    "Callback",
    "DivergedError",
    "EvalConfig",
    "FitResult",
    "TrainConfig",
    "Trainer",
    "TrialConfig",
    "fit",
]
