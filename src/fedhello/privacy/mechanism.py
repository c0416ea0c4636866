"""The server's private aggregation: clip, sum per tensor, add Gaussian noise, divide by the planned count.

For every tensor t, with P_t the clients the round's plan asked to return t:

    new_t = old_t + (sum over accepted i in P_t of clip(Δ_i)_t + N(0, (z·C)² I)) / |P_t|

The denominator is the planned count |P_t|, not McMahan et al.'s fixed expected count:
fedhello samples exactly `clients_per_round` clients without replacement and the
accounting is replace-one (`fedhello.privacy.accounting`), so the sample size is public,
and which sampled client trains which tensor is decided by the allocation from public
inputs only (the seed, the capability groups, Fisher scores on the server's public
proxy data and the already released global model). |P_t| is therefore the same in
neighbouring federations, and dividing by it is post-processing. A planned client whose
update is dropped (rejected, failed, late) contributes zero, which is within the clip
bound, so dropping never changes the denominator or the guarantee.

Heterogeneous layer sets do not change the sensitivity: a client's whole update, over
every tensor it trained, is clipped to C, so one client moves the vector of all
per-tensor sums by at most C (2C when replaced), and the same noise on every tensor
covers it. What they change is utility: the noise on tensor t is divided by |P_t|, so a
layer trained by 2 clients in a round gets 5 times the relative noise of one trained by
10 (`LayerNoise` reports it per layer and round).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedhello.aggregation import ClientUpdate
from fedhello.config import ExperimentConfig, PrivacyConfig
from fedhello.errors import ConfigError
from fedhello.privacy.accounting import epsilon
from fedhello.privacy.adaptive import adaptive_noise_split, default_count_stddev, next_clip_norm
from fedhello.privacy.clipping import clip_update
from fedhello.privacy.validation import configured_noise_multiplier
from fedhello.records import PrivacyRecord
from fedhello.seeding import numpy_rng, torch_generator
from fedhello.tensor_state import TensorState

# Sub-streams of the "privacy" stream within a round.
UPDATE_NOISE, COUNT_NOISE = 0, 1


@dataclass
class PrivateAggregator:
    """DP-FedAvg on the server: the clip norm of the round, the noised aggregation, ε so far."""

    settings: PrivacyConfig
    seed: int
    num_clients: int
    clients_per_round: int
    noise_multiplier: float  # z of the accounting (solved from target_epsilon when given)
    clip_norm: float

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> PrivateAggregator:
        """The aggregator of a run; the noise is solved from `target_epsilon` here, before round 1."""
        privacy = config.privacy
        aggregator = cls(
            privacy,
            config.seed,
            config.federation.num_clients,
            config.federation.clients_per_round,
            configured_noise_multiplier(config),
            privacy.clip_norm,
        )
        if privacy.adaptive:  # with target_epsilon, the split is checked once the noise is known
            try:
                adaptive_noise_split(aggregator.noise_multiplier, aggregator.count_stddev)
            except ValueError as error:
                raise ConfigError(f"config field 'privacy.clipped_count_stddev': {error}") from None
        return aggregator

    @property
    def count_stddev(self) -> float:
        return self.settings.clipped_count_stddev or default_count_stddev(self.clients_per_round)

    @property
    def update_noise_multiplier(self) -> float:
        """The multiplier of the noise on the update sums (larger than z when adaptive clipping spends some)."""
        if not self.settings.adaptive:
            return self.noise_multiplier
        return adaptive_noise_split(self.noise_multiplier, self.count_stddev)

    @property
    def clips_on_client(self) -> bool:
        return self.settings.mode == "client"

    def epsilon_after(self, rounds: int) -> float:
        return epsilon(self.noise_multiplier, self.num_clients, self.clients_per_round, rounds, self.settings.delta)

    # ------------------------------------------------------------------ state (checkpointed)

    def state_dict(self) -> dict[str, float]:
        return {"clip_norm": self.clip_norm}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.clip_norm = float(state.get("clip_norm", self.settings.clip_norm))

    # ------------------------------------------------------------------ one round

    def aggregate(
        self,
        global_state: TensorState,
        updates: Sequence[ClientUpdate],
        plan: PlannedContributions,
        reported_within_clip: Mapping[int, bool],
        round_number: int,
    ) -> tuple[TensorState, PrivacyRecord]:
        """The noised per-tensor means and the round's privacy record.

        `reported_within_clip[client]`: whether a client-side clipper found the update
        within the clip norm (with server clipping it is measured here). Every update is
        clipped here as well, so a client that did not clip cannot break the bound.
        """
        clip_norm = self.clip_norm
        sums: dict[str, torch.Tensor] = {}
        within_clip: list[bool] = []
        for update in sorted(updates, key=lambda u: u.client_id):
            clipped, was_within = clip_update(update.deltas, clip_norm)
            reported = reported_within_clip.get(update.client_id, was_within)
            within_clip.append(reported if self.clips_on_client else was_within)
            for name, delta in clipped.items():
                sums[name] = sums.get(name, torch.zeros_like(global_state[name])) + delta.to(global_state[name].dtype)
        noise_std = self.update_noise_multiplier * clip_norm
        generator = torch_generator(self.seed, "privacy", round_number, UPDATE_NOISE)
        new_state = dict(global_state)
        slots = plan.num_layers + 1  # every layer, then the head
        noise_sq, signal_sq = np.zeros(slots), np.zeros(slots)
        for name in sorted(global_state):
            count = plan.tensor_counts.get(name, 0)
            if count == 0:
                continue
            old = global_state[name]
            noise = torch.randn(old.shape, generator=generator, dtype=torch.float32).to(old.device, old.dtype)
            noise = noise * noise_std
            total = sums.get(name, torch.zeros_like(old))
            new_state[name] = old + (total + noise) / count
            slot = plan.slot(name)
            noise_sq[slot] += float((noise.double() ** 2).sum())
            signal_sq[slot] += float((total.double() ** 2).sum())
        contributors = [0] * slots
        for update in updates:
            for slot in {plan.slot(name) for name in update.deltas}:
                contributors[slot] += 1
        ratios = [math.sqrt(n / s) if s > 0 else None for n, s in zip(noise_sq, signal_sq, strict=True)]
        unclipped_fraction = self._adapt_clip_norm(within_clip, plan.num_clients, round_number)
        record = PrivacyRecord(
            epsilon=self.epsilon_after(round_number),
            delta=self.settings.delta,
            noise_multiplier=self.noise_multiplier,
            clip_norm=clip_norm,
            noise_std=noise_std,
            layer_contributors=contributors[:-1],
            layer_noise_to_signal=ratios[:-1],
            head_contributors=contributors[-1],
            head_noise_to_signal=ratios[-1],
            unclipped_fraction=unclipped_fraction,
        )
        return new_state, record

    def _adapt_clip_norm(self, within_clip: list[bool], planned_clients: int, round_number: int) -> float | None:
        """Adaptive clipping: move the clip norm towards the target quantile; return the noised unclipped fraction.

        The count is over the round's planned clients (a public number); a planned
        client whose update did not arrive counts as one half, the centre of a bit.
        """
        if not self.settings.adaptive or planned_clients == 0:
            return None
        missing = planned_clients - len(within_clip)
        noise = numpy_rng(self.seed, "privacy", round_number, COUNT_NOISE).normal(0.0, self.count_stddev)
        fraction = (sum(within_clip) + missing / 2 + noise) / planned_clients
        self.clip_norm = next_clip_norm(
            self.clip_norm, fraction, self.settings.target_quantile, self.settings.clip_learning_rate
        )
        return float(fraction)


@dataclass(frozen=True)
class PlannedContributions:
    """What a round's plan asked for: how many trained clients return each tensor, and which layer it is in."""

    num_clients: int
    tensor_counts: Mapping[str, int]
    layer_of: Mapping[str, int]
    num_layers: int

    def slot(self, name: str) -> int:
        """The tensor's layer, or `num_layers` for the head (and anything outside the layers)."""
        return self.layer_of.get(name, self.num_layers)
