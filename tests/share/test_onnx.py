"""ONNX export: PyTorch and onnxruntime agree to 1e-4 (max abs) over batch sizes and lengths for the tiny
preset (mel and CQT front ends), a shrunken base and the real MiniLM text tower; the exported tokenizer
gives MUSER.tokenize's ids without transformers; `muser export` writes what onnx.json says."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'muser[onnx]')")

from muser.cli import main  # noqa: E402
from muser.config import EvalConfig  # noqa: E402
from muser.models.muser import MUSER  # noqa: E402
from muser.share.onnx import NOT_EXPORTED, PARITY_TOL, export_onnx, parity  # noqa: E402

TOL = 1e-4  # max abs difference of unit embeddings, PyTorch vs onnxruntime
TEXTS = [
    ["rock"],
    ["a song of hip-hop, belongs to fast-rhythm music, whose style is inspiring", "jazz", "calm piano"],
    ["blues guitar " * 40] * 2,  # truncated at max_length
]
# A shrunken base: base's depth and shapes (6 waveform stages, 128 mel bands, 512-d space, 6 text
# layers) at a quarter of its widths, so export and parity take seconds on CPU.
SHRUNKEN_BASE = {
    "wave_channels": (32, 32, 64, 64, 128, 128),
    "wave_frontend_filters": 32,
    "spec_channels": (16, 32, 64, 128),
    "text_hidden": 128,
    "text_layers": 6,
}


def _trained_like(model: MUSER) -> MUSER:
    """Non-trivial BatchNorm statistics (as after training), so eval-mode parity covers them."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """The tiny preset (with trained-like BatchNorm statistics) and its export, shared by the tests below."""
    torch.manual_seed(0)
    model = _trained_like(MUSER.from_preset("tiny"))
    out = tmp_path_factory.mktemp("tiny-onnx")
    return model, out, export_onnx(model, out, chunk_seconds=3.0)


def test_tiny_onnx_matches_pytorch(tiny_export):
    model, out, info = tiny_export
    worst = parity(model, out, [(1, 16000), (3, 24000), (5, 8001), (2, 48000)], TEXTS)
    assert worst["audio"] < TOL and worst["text"] < TOL, worst
    assert info["audio_embedding"] == "both" and info["towers"]["text"]["max_length"] == 64


@pytest.mark.parametrize(
    ("preset", "overrides", "shapes"),
    [
        ("tiny", {"spec_kind": "cqt", "audio_embedding": "spectrogram"}, [(1, 16000), (4, 20000)]),
        ("base", SHRUNKEN_BASE, [(1, 16000), (2, 7290), (3, 40000)]),
    ],
    ids=["tiny-cqt", "shrunken-base"],
)
def test_onnx_matches_pytorch(tmp_path, preset, overrides, shapes):
    torch.manual_seed(0)
    model = _trained_like(MUSER.from_preset(preset, **overrides))
    info = export_onnx(model, tmp_path, chunk_seconds=3.0)
    worst = parity(model, tmp_path, shapes, TEXTS)
    assert worst["audio"] < TOL and worst["text"] < TOL, worst
    assert info["embed_dim"] == model.config.embed_dim and info["sample_rate"] == model.config.sample_rate
    assert info["min_samples"] == model.min_samples and info["chunk_samples"] == 48000
    assert json.loads((tmp_path / "onnx.json").read_text()) == json.loads(json.dumps(info))
    assert "training objective" in info["not_exported"] and info["not_exported"] == NOT_EXPORTED


def test_onnx_minilm_text_tower(tmp_path, minilm_dir):
    torch.manual_seed(0)
    model = MUSER.from_preset("tiny", text_encoder=str(minilm_dir)).eval()
    export_onnx(model, tmp_path, chunk_seconds=3.0)
    worst = parity(model, tmp_path, [(2, 16000)], TEXTS)
    assert worst["audio"] < TOL and worst["text"] < TOL, worst


def test_exported_tokenizer_needs_no_transformers(tiny_export):
    from tokenizers import Tokenizer

    model, out, _ = tiny_export
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    for texts in TEXTS:
        want = model.tokenize(texts)
        got = tok.encode_batch(texts)
        assert np.array_equal(np.array([e.ids for e in got]), want["input_ids"].numpy())
        assert np.array_equal(np.array([e.attention_mask for e in got]), want["attention_mask"].numpy())


def test_export_cli_writes_and_checks(tmp_path):
    model_dir = MUSER.from_preset("tiny").eval().save_pretrained(tmp_path / "model")
    res = CliRunner().invoke(main, ["export", str(model_dir), "--onnx", str(tmp_path / "onnx")])
    assert res.exit_code == 0, res.output
    assert "parity with PyTorch" in res.output
    info = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert "3-s chunks" in res.output and info["chunk_seconds"] == 3.0 and info["opset"] == 17
    for name in ("audio.onnx", "text.onnx", "tokenizer.json", "tokenizer/tokenizer_config.json"):
        assert (tmp_path / "onnx" / name).is_file(), name
    audio = float(res.output.split("audio ")[1].split(",")[0])
    assert audio < TOL and PARITY_TOL == TOL  # the CLI refuses graphs past the same bar


def test_export_cli_names_a_wrong_folder(tmp_path):
    res = CliRunner().invoke(main, ["export", str(tmp_path), "--onnx", str(tmp_path / "o")])
    assert res.exit_code == 2 and "is not a run folder or a model folder" in res.output


def test_export_cuts_tracks_as_muser_embed_does_whatever_the_training_crop(trained_run, tmp_path):
    """The run trained on 2-s crops; onnx.json says 3 s, the chunk `muser embed` and `muser eval` use, so a
    catalogue built from the ONNX graph cuts tracks as muser's own does (the training crop used to be
    written here, which split the two once the default crop stopped being 3 s)."""
    assert json.loads((trained_run / "config.json").read_text())["data"]["crop_seconds"] == 2.0
    res = CliRunner().invoke(main, ["export", str(trained_run), "--onnx", str(tmp_path / "o"), "--no-check"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "o" / "onnx.json").read_text())
    assert info["chunk_seconds"] == EvalConfig.chunk_seconds == 3.0 and info["chunk_samples"] == 48000
    args = ["export", str(trained_run), "--onnx", str(tmp_path / "p"), "--no-check", "--chunk-seconds", "2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "p" / "onnx.json").read_text())["chunk_samples"] == 32000
    refused = ["export", str(trained_run), "--onnx", str(tmp_path / "q"), "--chunk-seconds", "0"]
    res = CliRunner().invoke(main, refused)
    assert res.exit_code == 2 and "--chunk-seconds" in res.output and not (tmp_path / "q").exists()
