"""Escalation priority and the audit sample: pure numpy, no Django.

An escalation is more urgent the less sure the model was, the more the crowd disagreed, and the
more a mistake on the item would cost (the project's harm weight of its likely label).
"""

from __future__ import annotations

import numpy as np

# splitmix64's constants: a cheap, well-mixed hash of an integer.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _spread(confidence: np.ndarray, k: int) -> np.ndarray:
    """1 − top probability, rescaled so that a uniform answer over k labels gives 1."""
    return np.clip((1.0 - confidence) * k / max(k - 1, 1), 0.0, 1.0)


def escalation_priority(
    model_confidence: np.ndarray,
    agreement: np.ndarray,
    crowd_confidence: np.ndarray,
    posterior: np.ndarray,
    harm_weights: np.ndarray,
) -> np.ndarray:
    """Priority per item: harm × (model uncertainty + crowd disagreement) / 2.

    model_confidence is the model's top probability (NaN where the item has no prediction);
    agreement the share of agreeing label pairs (NaN with a single label); crowd_confidence the
    consensus posterior's top value; posterior n × k; harm_weights one weight a label. Where a
    figure is missing, the crowd's own uncertainty stands in for it.
    """
    k = posterior.shape[1]
    crowd_doubt = _spread(crowd_confidence, k)
    uncertainty = np.where(np.isnan(model_confidence), crowd_doubt, _spread(model_confidence, k))
    disagreement = np.where(np.isnan(agreement), crowd_doubt, 1.0 - agreement)
    harm = posterior @ harm_weights
    return harm * (uncertainty + disagreement) / 2.0


def audit_draw(item_ids: np.ndarray, salt: int) -> np.ndarray:
    """A uniform number in [0, 1) per item id, the same on every call (splitmix64 of id and salt).

    An item is in the audit sample when its draw is below the audit fraction: recomputing
    consensus never re-samples, and raising the fraction only adds items to the sample.
    """
    # The salt's multiple is taken modulo 2^64 in Python: numpy warns about scalar overflow.
    z = item_ids.astype(np.uint64) + np.uint64((salt * int(_GOLDEN)) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)
