"""The MUSER model: outputs, conventions, gradients, presets, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from muser import MUSER
from muser.config import preset
from muser.models.muser import check_audio
from tests.models.small import small_model

SR = 16000
TEXTS = ["A song of rock, whose style is happy.", "A song of jazz, belongs to blues music.", "Calm piano."]


@pytest.fixture(scope="module")
def model() -> MUSER:
    torch.manual_seed(0)
    return small_model().eval()


@pytest.fixture(scope="module")
def wave() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, SR, generator=g) * 1.6 - 0.8


def test_forward_shapes_and_unit_norm(model, wave):
    out = model({"audio": wave, **model.tokenize(TEXTS)})
    assert set(out) == {"audio", "spec", "text"}
    for emb in out.values():
        assert emb.shape == (3, 24)
        assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert set(model({"audio": wave})) == {"audio", "spec"}
    assert set(model(model.tokenize(TEXTS))) == {"text"}


def test_forward_computes_only_the_outputs_asked_for(model, wave, monkeypatch):
    batch = {"audio": wave, **model.tokenize(TEXTS)}
    full = model(batch)
    calls = []
    monkeypatch.setattr(model.spectrogram, "forward", lambda *a, **k: calls.append(1))
    out = model(batch, outputs={"audio", "text"})
    assert set(out) == {"audio", "text"} and not calls  # the spectrogram tower never ran
    assert torch.equal(out["audio"], full["audio"]) and torch.equal(out["text"], full["text"])
    assert set(model(batch, outputs=())) == set()
    with pytest.raises(ValueError, match="outputs must be among audio, spec, text"):
        model(batch, outputs={"mel"})


def test_encode_audio_variants(model, wave):
    with torch.no_grad():
        a = model.encode_audio(wave, "waveform")
        s = model.encode_audio(wave, "spectrogram")
        both = model.encode_audio(wave)
    assert model.config.audio_embedding == "both"
    assert torch.allclose(both, torch.nn.functional.normalize(a + s, dim=-1), atol=1e-6)
    assert torch.allclose(both.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="which"):
        model.encode_audio(wave, "mel")


def test_encode_towers_is_both_towers_before_their_projections(model, wave):
    length = torch.tensor([SR, SR // 2, SR])
    with torch.no_grad():
        towers = model.encode_towers(wave, length=length)
        w, s = model.waveform(wave, length), model.spectrogram(wave, length)
        embedding = model.encode_audio(wave, length=length)
    assert towers.shape == (3, model.proj_audio.in_features + model.proj_spec.in_features)
    assert torch.equal(towers, torch.cat([w, s], dim=-1))
    # The projections of these very features are the shared embedding: nothing else sits between them.
    projected = torch.nn.functional.normalize(model.proj_audio(w), dim=-1) + torch.nn.functional.normalize(
        model.proj_spec(s), dim=-1
    )
    assert torch.allclose(torch.nn.functional.normalize(projected, dim=-1), embedding, atol=1e-6)
    # One tower alone for a model that embeds with one (w/o spec, AE only are probed on the waveform tower).
    with torch.no_grad():
        assert torch.equal(model.encode_towers(wave, "waveform", length), w)
        assert torch.equal(model.encode_towers(wave, "spectrogram", length), s)
    with pytest.raises(ValueError, match="which"):
        model.encode_towers(wave, "mel")
    with pytest.raises(ValueError, match="float"):
        model.encode_towers((wave * 32767).to(torch.int16))


def test_eval_mode_is_deterministic(model, wave):
    with torch.no_grad():
        assert torch.equal(model.encode_audio(wave), model.encode_audio(wave))
        assert torch.equal(model.encode_text(TEXTS), model.encode_text(TEXTS))


def test_amplitude_convention_is_enforced(model, wave):
    with pytest.raises(ValueError, match="float"):
        model.encode_audio((wave * 32767).to(torch.int16))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model.encode_audio(wave * 32768.0)
    with pytest.raises(ValueError, match="batch, samples"):
        model.encode_audio(wave[0])
    with pytest.raises(ValueError, match="torch.Tensor"):
        model.encode_audio(wave.numpy())
    with pytest.raises(ValueError, match="at least"):
        model.encode_audio(wave[:, : model.min_samples - 1])
    with pytest.raises(ValueError, match="attention_mask"):
        model({"input_ids": model.tokenize(TEXTS)["input_ids"]})
    assert check_audio(wave.double()).dtype == torch.float32


def test_gradients_reach_every_tower(wave):
    m = small_model().train()
    out = m({"audio": wave, **m.tokenize(TEXTS)})
    (out["audio"] @ out["text"].T + out["spec"] @ out["text"].T).logsumexp(dim=1).sum().backward()
    groups = m.param_groups()
    assert set(groups) == {"waveform", "spectrogram", "text", "projections"}
    for name, params in groups.items():
        assert params, name
        assert all(p.grad is not None for p in params), name
        assert sum(p.grad.abs().sum() for p in params) > 0, name
    # Every trainable parameter belongs to exactly one group.
    grouped = [id(p) for ps in groups.values() for p in ps]
    assert sorted(grouped) == sorted(id(p) for p in m.parameters() if p.requires_grad)


def test_save_load_round_trip(tmp_path, model, wave):
    model.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", "text", "tokenizer"} <= files
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["format_version"] == 1 and meta["model"]["embed_dim"] == 24
    loaded = MUSER.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config and not loaded.text_is_pretrained
    with torch.no_grad():
        assert torch.equal(loaded.encode_audio(wave), model.encode_audio(wave))
        assert torch.equal(loaded.encode_text(TEXTS), model.encode_text(TEXTS))
    assert loaded.tokenizer.get_vocab() == model.tokenizer.get_vocab()


def test_from_pretrained_rejects_other_folders(tmp_path):
    with pytest.raises(ValueError, match="not a MUSER model folder"):
        MUSER.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not a MUSER model folder"):
        MUSER.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "muser", "format_version": 1, "model": {}}')
    with pytest.raises(ValueError, match="incomplete"):
        MUSER.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "muser", "format_version": 99}')
    with pytest.raises(ValueError, match="upgrade"):
        MUSER.from_pretrained(tmp_path)


def test_tokenizer_texts_train_the_builtin_tokenizer():
    m = small_model(embed_dim=8, text_layers=1, text_hidden=16, text_heads=1)
    assert m.tokenizer.tokenize("zydeco") != ["zydeco"]
    m = MUSER.from_config(m.config, tokenizer_texts=["zydeco accordion music"] * 4)
    assert m.tokenizer.tokenize("zydeco") == ["zydeco"]


def test_preset_sizes():
    tiny = MUSER.from_preset("tiny")
    n_tiny = sum(p.numel() for p in tiny.parameters())
    assert n_tiny < 5_000_000
    assert tiny.config.fmax is None and tiny.config.sample_rate == SR
    with torch.device("meta"):  # count base without allocating or initialising its weights
        base = MUSER.from_preset("base")
    n_base = sum(p.numel() for p in base.parameters())
    assert 10_000_000 < n_base < 100_000_000
    assert base.config.embed_dim == preset("base").embed_dim
    with pytest.raises(ValueError, match="unknown preset"):
        MUSER.from_preset("huge")


def test_pretrained_text_encoder_saved_inside(tmp_path, minilm_dir, wave):
    m = small_model(text_encoder=str(minilm_dir), text_freeze_layers=4).eval()
    assert m.text_is_pretrained
    frozen = sum(p.numel() for p in m.text.parameters() if not p.requires_grad)
    assert frozen > 0 and all(p.requires_grad for p in m.param_groups()["text"])
    m.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["text"] == {"pretrained": True, "source": str(minilm_dir)}
    loaded = MUSER.from_pretrained(tmp_path / "m").eval()  # rebuilt from the saved folder alone
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(TEXTS), m.encode_text(TEXTS))


def test_length_pools_out_zero_padding(model, wave):
    # Tolerance 1e-5 on unit embeddings: the towers mask padded frames before every conv and pool, so a
    # padded clip differs from the unpadded one only by float summation order (measured ~1e-7).
    n = 9000
    padded = torch.cat([wave[:, :n], torch.zeros(3, SR - n)], dim=1)
    lengths = torch.tensor([SR, n, 1])  # mixed in one batch, down to a single sample
    padded[0] = wave[0]
    with torch.no_grad():
        out = model({"audio": padded, "length": lengths})
        for which, key in (("waveform", "audio"), ("spectrogram", "spec")):
            alone = model.encode_audio(wave[1:2, :n].contiguous(), which)
            assert torch.allclose(out[key][1], alone[0], atol=1e-5), which
            assert torch.allclose(model.encode_audio(padded, which, length=lengths), out[key], atol=0)
        both = model.encode_audio(padded, length=lengths)
    assert both.shape == (3, 24) and torch.isfinite(both).all()
    assert torch.allclose(both.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_full_length_is_bit_identical_to_no_length(model, wave):
    full = torch.full((3,), SR)
    with torch.no_grad():
        assert torch.equal(model.encode_audio(wave, length=full), model.encode_audio(wave))
        a, b = model({"audio": wave, "length": full}), model({"audio": wave})
    assert torch.equal(a["audio"], b["audio"]) and torch.equal(a["spec"], b["spec"])


def test_length_is_validated(model, wave):
    with pytest.raises(ValueError, match="shape"):
        model.encode_audio(wave, length=torch.tensor([SR, SR]))
    with pytest.raises(ValueError, match=r"\[0, 16000\]"):
        model.encode_audio(wave, length=torch.tensor([SR, SR + 1, 5]))
    with pytest.raises(ValueError, match="integer"):
        model.encode_audio(wave, length=torch.tensor([1.0, 2.0, 3.0]))


def test_gradients_flow_with_length_in_training(wave):
    m = small_model().train()
    out = m({"audio": wave, "length": torch.tensor([SR, 5000, 1]), **m.tokenize(TEXTS)})
    (out["audio"] @ out["text"].T + out["spec"] @ out["text"].T).logsumexp(dim=1).sum().backward()
    for name in ("waveform", "spectrogram"):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.param_groups()[name])
