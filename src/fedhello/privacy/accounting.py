"""ε of a DP-FedAvg run, from Google's dp-accounting library (RDP accountant).

Each round is one Gaussian mechanism on a sample of exactly `clients_per_round` of
`num_clients` clients drawn without replacement, which is how fedhello samples. The
matching accounting is `SampledWithoutReplacementDpEvent` under the replace-one
neighbouring relation (Wang, Balle and Kasiviswanathan 2019): the number of clients is
public and a neighbouring federation has one client's data replaced. Replacing one
clipped update moves a sum by up to 2 x clip_norm, so the event's noise multiplier
(noise std / sensitivity) is half of ours. `rounds` rounds compose as a
`SelfComposedDpEvent`.
"""

from __future__ import annotations

from functools import lru_cache

from dp_accounting import dp_event, mechanism_calibration
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp import RdpAccountant

# Replace-one sensitivity of a sum of updates clipped to C is 2C.
REPLACE_ONE_SENSITIVITY = 2.0


def run_event(noise_multiplier: float, num_clients: int, clients_per_round: int, rounds: int) -> dp_event.DpEvent:
    """The DP event of `rounds` rounds with noise std `noise_multiplier` x clip_norm on each sum."""
    gaussian = dp_event.GaussianDpEvent(noise_multiplier / REPLACE_ONE_SENSITIVITY)
    sampled = dp_event.SampledWithoutReplacementDpEvent(num_clients, clients_per_round, gaussian)
    return dp_event.SelfComposedDpEvent(sampled, rounds)


def new_accountant() -> RdpAccountant:
    return RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)


@lru_cache(maxsize=4096)
def epsilon(noise_multiplier: float, num_clients: int, clients_per_round: int, rounds: int, delta: float) -> float:
    """ε at `delta` after `rounds` rounds (0 before the first)."""
    if rounds == 0:
        return 0.0
    event = run_event(noise_multiplier, num_clients, clients_per_round, rounds)
    return float(new_accountant().compose(event).get_epsilon(delta))


def check_reachable(
    target_epsilon: float, num_clients: int, clients_per_round: int, rounds: int, delta: float, upper: float
) -> None:
    """Raise ValueError when even noise multiplier `upper` does not reach `target_epsilon`."""
    reached = epsilon(upper, num_clients, clients_per_round, rounds, delta)
    if reached > target_epsilon:
        raise ValueError(
            f"privacy.target_epsilon {target_epsilon:g} is not reached in {rounds} rounds by any noise_multiplier up "
            f"to {upper:g} (that gives ε={reached:.4g} at δ={delta:g}); raise the target, run fewer rounds or sample "
            "fewer clients per round"
        )


@lru_cache(maxsize=64)
def solve_noise_multiplier(
    target_epsilon: float, num_clients: int, clients_per_round: int, rounds: int, delta: float, upper: float
) -> float:
    """The smallest noise multiplier in (0, upper] whose ε at `delta` after `rounds` rounds is at most the target."""
    check_reachable(target_epsilon, num_clients, clients_per_round, rounds, delta, upper)
    return float(
        mechanism_calibration.calibrate_dp_mechanism(
            new_accountant,
            lambda sigma: run_event(sigma, num_clients, clients_per_round, rounds),
            target_epsilon,
            delta,
            mechanism_calibration.ExplicitBracketInterval(1e-3, upper),
            tol=1e-4,
        )
    )
