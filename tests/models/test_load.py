"""load_model: `--checkpoint` as a run folder, a model folder or `random`, and the fingerprint of each."""

from __future__ import annotations

import pytest
import torch

from muser.models.load import load_model, model_folder, random_fingerprint
from tests.models.small import small_model


def test_random_is_seeded_and_fingerprinted_by_architecture_and_seed():
    a, fp_a, desc = load_model("random", "tiny", 3, torch.device("cpu"))
    b, fp_b, _ = load_model("random", "tiny", 3, torch.device("cpu"))
    _, fp_c, _ = load_model("random", "tiny", 4, torch.device("cpu"))
    assert desc == "random:tiny" and not a.training
    assert fp_a == fp_b == random_fingerprint(a.config, 3) and fp_a != fp_c
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_a_run_folder_means_its_model_folder(tmp_path):
    model = small_model()
    model.save_pretrained(tmp_path / "run" / "model")
    (tmp_path / "run" / "last.pt").write_bytes(b"not read")
    assert model_folder(tmp_path / "run") == tmp_path / "run" / "model"
    from_run, fp_run, desc = load_model(str(tmp_path / "run"), "tiny", 0, torch.device("cpu"))
    from_model, fp_model, _ = load_model(str(tmp_path / "run" / "model"), "tiny", 0, torch.device("cpu"))
    assert fp_run == fp_model and desc == str((tmp_path / "run" / "model").resolve())
    x = torch.rand(1, model.config.sample_rate) * 2 - 1
    assert torch.allclose(from_run.encode_audio(x), from_model.encode_audio(x))


def test_a_missing_path_or_a_file_is_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(str(tmp_path / "nope"), "tiny", 0, torch.device("cpu"))
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file; pass the run folder"):
        load_model(str(tmp_path / "last.pt"), "tiny", 0, torch.device("cpu"))
