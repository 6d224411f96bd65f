"""The steering state a denoising loop drives: log-weights, potentials, resampling and a trace.

A loop over ``num_steps`` denoising steps (index 0 = first, noisiest) asks :meth:`FKSteering.is_update_step`
whether rewards are needed at this step; if so it scores x̂₀ of every particle and calls
:meth:`FKSteering.update`, which returns flat ancestor indices to apply to every per-particle tensor.
Particles are laid out group-major: particle k of group g is row ``g·K + k``.

Resampling happens at update steps (never at the last one): always, or only where the group's
ESS < ``ess_threshold``·K. Log-weights accumulate between resamplings (skipped steps included) and
reset to 0 after one. The last step applies the final correction of :mod:`fkdiff.smc.potentials`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from .potentials import (
    check_potential,
    final_correction,
    init_potential_state,
    potential_increment,
    reorder_potential_state,
)
from .resampling import RESAMPLING_SCHEMES, flat_indices, resample
from .weights import check_log_weights, ess, log_mean_exp, log_normalize

logger = logging.getLogger(__name__)

__all__ = ["FKSteering", "StepRecord", "SteeringTrace", "check_rewards", "SELECTIONS", "select_particles"]

SELECTIONS = ("best", "sample", "all")

# more weight updates than this with a `max`/`sum`/`rt` potential tilts the intermediate targets many times
_FREQUENT_UPDATES = 10


def check_rewards(rewards, num: int, name: str = "reward") -> torch.Tensor:
    """Validate a reward output: a finite real tensor with ``num`` elements (one per particle)."""
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(f"`{name}` must return a torch.Tensor of shape [{num}], got {type(rewards).__name__}")
    if rewards.is_complex() or rewards.dtype == torch.bool:
        raise TypeError(f"`{name}` must return a real tensor, got dtype {rewards.dtype}")
    if tuple(rewards.shape) != (num,):
        raise ValueError(f"`{name}` must return one score per image: shape [{num}], got {tuple(rewards.shape)}")
    rewards = rewards.detach()
    if not torch.isfinite(rewards).all():
        bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()[:8]
        raise ValueError(f"`{name}` returned non-finite scores (NaN or inf) at indices {bad}")
    return rewards


@dataclass
class StepRecord:
    """What happened at one weight-update step."""

    step: int
    ess: torch.Tensor  # [G], before resampling
    resampled: torch.Tensor  # [G] bool
    ancestors: torch.Tensor  # [G, K] within-group ancestors (identity where not resampled)
    rewards: torch.Tensor  # [G, K] rewards of the particles before resampling
    log_increment: torch.Tensor  # [G, K] log G added at this step, before resampling

    def as_dict(self) -> dict:
        return {
            "step": self.step,
            "ess": self.ess.tolist(),
            "resampled": self.resampled.tolist(),
            "ancestors": self.ancestors.tolist(),
            "rewards": self.rewards.tolist(),
            "log_increment": self.log_increment.tolist(),
        }


@dataclass
class SteeringTrace:
    """ESS, resampling events and ancestry per update step, and the log normaliser estimate per group."""

    records: list[StepRecord] = field(default_factory=list)
    log_z: torch.Tensor | None = None  # [G], set when the run finishes

    @property
    def num_resampling_events(self) -> int:
        return int(sum(int(r.resampled.any()) for r in self.records))

    def ancestry(self) -> torch.Tensor:
        """Original particle (at step 0) that each final particle descends from, ``[G, K]``."""
        if not self.records:
            raise ValueError("empty trace")
        g, k = self.records[0].ancestors.shape
        lineage = torch.arange(k).expand(g, k).clone()
        for rec in self.records:
            lineage = torch.gather(lineage, 1, rec.ancestors.cpu())
        return lineage

    def as_dict(self) -> dict:
        return {
            "records": [r.as_dict() for r in self.records],
            "log_z": None if self.log_z is None else self.log_z.tolist(),
        }


class FKSteering:
    """Feynman–Kac SMC state for ``num_groups`` groups of ``num_particles`` particles over ``num_steps`` steps.

    Args:
        num_groups: G, the number of independent groups (prompts); resampling never crosses groups.
        num_particles: K >= 1 particles per group.
        num_steps: number of denoising steps the loop will run.
        potential: one of ``diff`` (default), ``max``, ``sum``, ``rt``.
        lmbda: λ, the tilt strength of the target p₀·exp(λ·r).
        resampling: resampling scheme (``systematic``, ``stratified``, ``multinomial``, ``residual``).
        resample_start, resample_end, resample_interval: update steps are
            ``start <= step <= end`` with ``(step - start) % interval == 0`` (``end`` defaults to the
            last step); the last step is always an update step (for the final correction).
        ess_threshold: if given (0 < t <= 1), resample a group only where ESS < t·K; otherwise
            resample at every intermediate update step.
        generator: ``torch.Generator`` for the resampling draws.
        device: where the weights live.
    """

    def __init__(
        self,
        num_groups: int,
        num_particles: int,
        num_steps: int,
        *,
        potential: str = "diff",
        lmbda: float = 1.0,
        resampling: str = "systematic",
        resample_start: int = 0,
        resample_end: int | None = None,
        resample_interval: int = 5,
        ess_threshold: float | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ):
        for name, val, low in (
            ("num_groups", num_groups, 1),
            ("num_particles", num_particles, 1),
            ("num_steps", num_steps, 1),
            ("resample_interval", resample_interval, 1),
        ):
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {val!r}")
        check_potential(potential)
        if resampling not in RESAMPLING_SCHEMES:
            raise ValueError(
                f"Unknown resampling scheme {resampling!r}; `resampling` must be one of {sorted(RESAMPLING_SCHEMES)}"
            )
        if not isinstance(lmbda, (int, float)) or not math.isfinite(lmbda):
            raise ValueError(f"`lmbda` must be a finite number, got {lmbda!r}")
        if ess_threshold is not None and not (0.0 < float(ess_threshold) <= 1.0):
            raise ValueError(f"`ess_threshold` must be in (0, 1] or None, got {ess_threshold!r}")
        end = num_steps - 1 if resample_end is None else resample_end
        if not (0 <= resample_start <= end <= num_steps - 1):
            raise ValueError(
                "`resample_start` and `resample_end` must satisfy 0 <= start <= end <= num_steps - 1, "
                f"got start={resample_start}, end={resample_end}, num_steps={num_steps}"
            )
        self.G, self.K, self.num_steps = num_groups, num_particles, num_steps
        self.potential, self.lmbda = potential, float(lmbda)
        self.resampling, self.ess_threshold = resampling, ess_threshold
        self.start, self.end, self.interval = resample_start, end, resample_interval
        self.generator = generator
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.log_weights = torch.zeros(self.G, self.K, dtype=torch.float64, device=self.device)
        self._pstate = init_potential_state((self.G, self.K), self.device)
        self._log_z_closed = torch.zeros(self.G, dtype=torch.float64, device=self.device)
        self.trace = SteeringTrace()
        self.finished = False
        n_updates = len(self.update_steps)
        if potential in ("max", "sum", "rt") and n_updates > _FREQUENT_UPDATES and lmbda != 0:
            logger.warning(
                "potential=%r with %d weight updates: `max`/`sum`/`rt` tilt the intermediate targets at every "
                "update and the final correction cannot recover them; use potential='diff' or update less often.",
                potential,
                n_updates,
            )

    # ------------------------------------------------------------------ schedule
    @property
    def update_steps(self) -> list[int]:
        steps = list(range(self.start, self.end + 1, self.interval))
        if steps[-1] != self.num_steps - 1:
            steps.append(self.num_steps - 1)
        return steps

    def is_update_step(self, step: int) -> bool:
        if step == self.num_steps - 1:
            return True
        return self.start <= step <= self.end and (step - self.start) % self.interval == 0

    # ------------------------------------------------------------------ weights
    def add_log_weights(self, increments: torch.Tensor, name: str = "log-weight increment") -> None:
        """Add per-particle log-weight increments (``[G·K]`` or ``[G, K]``), e.g. proposal corrections."""
        inc = increments.detach().to(self.device, torch.float64).reshape(self.G, self.K)
        if torch.isnan(inc).any() or (inc == math.inf).any():
            raise ValueError(f"{name} contains NaN or +inf")
        self.log_weights = self.log_weights + inc

    @property
    def log_z(self) -> torch.Tensor:
        """Running estimate of log Z per group: Σ over resamplings of log-mean-exp(w) + that of the current w."""
        return self._log_z_closed + log_mean_exp(self.log_weights)

    def update(self, step: int, rewards: torch.Tensor) -> torch.Tensor:
        """Weight update at ``step`` from per-particle rewards; returns flat ancestor indices ``[G·K]``."""
        if self.finished:
            raise RuntimeError("the steering run is finished; create a new FKSteering for a new run")
        if not self.is_update_step(step):
            raise ValueError(f"step {step} is not an update step; update steps are {self.update_steps}")
        if isinstance(rewards, torch.Tensor) and tuple(rewards.shape) == (self.G, self.K):
            rewards = rewards.reshape(-1)
        r = check_rewards(rewards, self.G * self.K).to(self.device).reshape(self.G, self.K)
        last = step == self.num_steps - 1
        if last:
            log_g, self._pstate = final_correction(self.lmbda, r, self._pstate)
        else:
            log_g, self._pstate = potential_increment(self.potential, self.lmbda, r, self._pstate)
        self.log_weights = check_log_weights(self.log_weights + log_g, "log_weights")
        group_ess = ess(self.log_weights)
        if last:
            do = torch.zeros(self.G, dtype=torch.bool, device=self.device)
        elif self.ess_threshold is None:
            do = torch.ones(self.G, dtype=torch.bool, device=self.device)
        else:
            do = group_ess < self.ess_threshold * self.K
        ident = torch.arange(self.K, device=self.device).expand(self.G, self.K)
        ancestors = ident
        if do.any():
            if (group_ess[do] == 0).any():
                logger.warning("a group has all weights zero (log-weight -inf); it is resampled uniformly")
            drawn = resample(self.log_weights, self.resampling, self.generator).to(self.device)
            ancestors = torch.where(do.unsqueeze(-1), drawn, ident)
            self._log_z_closed = self._log_z_closed + torch.where(
                do, log_mean_exp(self.log_weights), torch.zeros_like(self._log_z_closed)
            )
            self.log_weights = torch.where(do.unsqueeze(-1), torch.zeros_like(self.log_weights), self.log_weights)
            self._pstate = reorder_potential_state(self._pstate, ancestors)
        self.trace.records.append(StepRecord(step, group_ess.cpu(), do.cpu(), ancestors.cpu(), r.cpu(), log_g.cpu()))
        if last:
            self.finished = True
            self.trace.log_z = self.log_z.cpu()
        return flat_indices(ancestors)

    @property
    def normalized_log_weights(self) -> torch.Tensor:
        return log_normalize(self.log_weights)

    def select(self, selection: str = "best", generator: torch.Generator | None = None) -> torch.Tensor:
        """Flat indices of the output particles; see :func:`select_particles`."""
        return select_particles(self.log_weights, selection, generator or self.generator)


def select_particles(
    log_weights: torch.Tensor, selection: str = "best", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flat indices into ``[G·K]``: ``best`` (argmax weight, [G]), ``sample`` (one draw ~ W, [G]), ``all`` ([G·K])."""
    g, k = log_weights.shape
    if selection == "all":
        return torch.arange(g * k, device=log_weights.device)
    if selection == "best":
        idx = log_weights.argmax(dim=-1)
    elif selection == "sample":
        w = log_normalize(log_weights).exp()
        idx = torch.multinomial(w, 1, generator=generator).squeeze(-1)
    else:
        raise ValueError(f"Unknown selection {selection!r}; `selection` must be one of {list(SELECTIONS)}")
    return idx + torch.arange(g, device=log_weights.device) * k
