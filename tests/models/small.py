"""The tiny preset made smaller still, so that model tests stay fast on 2 cores."""

from __future__ import annotations

from muser import MUSER

SMALL = dict(
    wave_channels=(8, 8, 16, 16, 16),
    wave_frontend_filters=8,
    spec_channels=(4, 8, 16),
    n_mels=32,
    text_hidden=32,
    text_layers=2,
    text_heads=2,
    embed_dim=24,
)


def small_model(**overrides) -> MUSER:
    """MUSER.from_preset("tiny") with SMALL's fields, then the overrides (ModelConfig fields)."""
    return MUSER.from_preset("tiny", **{**SMALL, **overrides})
