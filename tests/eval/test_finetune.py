"""Contrastive fine-tuning (the PT+FT protocol) on chunks the reader delivers in batches of two widths."""

from __future__ import annotations

from muser.eval.finetune import finetune
from muser.shards.manifest import ShardFolder
from tests.models.small import small_model
from tests.shards import shardkit


def test_chunks_from_batches_of_different_widths_train_together(tmp_path):
    # 3-s chunks, reader batches of 4: the four 3-s tracks come in a batch 3 s wide, the four 2.5-s tracks
    # in one only 2.5 s wide; the fine-tuning shuffle buffer then mixes rows of both widths in one step.
    tracks = shardkit.make_tracks(8, [3.0] * 4 + [2.5] * 4, sample_rate=16000)
    folder = ShardFolder.open(shardkit.write_folder(tmp_path / "s", tracks, sample_rate=16000, per_shard=8))
    labels = {t["key"]: [t["meta"]["genres"][0]] for t in tracks}
    model = small_model()
    tuned, losses = finetune(model, folder, ["train"], labels, "genre", epochs=1, batch_size=4)
    assert losses and all(loss == loss for loss in losses)  # steps ran on mixed widths, no NaN
    assert tuned is not model
