"""Run options checked before any process starts: which towers a run's audio embedding may read."""

from __future__ import annotations

import dataclasses

import pytest

from muser.config import TrainConfig, preset
from muser.train.options import embed_with_trained_towers


@pytest.mark.parametrize(
    ("terms", "which"),
    [(("at",), "waveform"), (("st",), "spectrogram"), (("at", "st"), "both"), (("as",), "both")],
)
def test_the_audio_embedding_reads_only_trained_towers(terms, which):
    model, note = embed_with_trained_towers(preset("tiny"), TrainConfig(loss_terms=terms))
    assert model.audio_embedding == which
    # a note exactly when the preset's choice was changed, naming the tower left out
    assert (note is None) == (which == "both")
    if note:
        assert f"--loss-terms {','.join(terms)}" in note and which in note


def test_a_chosen_tower_no_term_trains_is_refused():
    model = dataclasses.replace(preset("tiny"), audio_embedding="spectrogram")
    with pytest.raises(
        ValueError, match="'spectrogram' reads a tower --loss-terms at never trains; use waveform"
    ):
        embed_with_trained_towers(model, TrainConfig(loss_terms=("at",)))
    assert embed_with_trained_towers(model, TrainConfig(loss_terms=("st",))) == (model, None)
