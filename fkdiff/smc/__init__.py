"""Model-agnostic Sequential Monte Carlo on tensors (pure torch; imports nothing from diffusers)."""

from .potentials import (
    POTENTIALS,
    PotentialState,
    final_correction,
    init_potential_state,
    potential_increment,
    reorder_potential_state,
)
from .resampling import RESAMPLING_SCHEMES, flat_indices, offspring_counts, resample
from .steering import SELECTIONS, FKSteering, SteeringTrace, StepRecord, check_rewards, select_particles
from .weights import check_log_weights, degenerate_groups, ess, log_mean_exp, log_normalize, normalized_weights

__all__ = [
    "POTENTIALS",
    "RESAMPLING_SCHEMES",
    "SELECTIONS",
    "FKSteering",
    "PotentialState",
    "SteeringTrace",
    "StepRecord",
    "check_log_weights",
    "check_rewards",
    "degenerate_groups",
    "ess",
    "final_correction",
    "flat_indices",
    "init_potential_state",
    "log_mean_exp",
    "log_normalize",
    "normalized_weights",
    "offspring_counts",
    "potential_increment",
    "reorder_potential_state",
    "resample",
    "select_particles",
]
