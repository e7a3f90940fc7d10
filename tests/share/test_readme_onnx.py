"""The README's ONNX search example runs as written, with torch made unimportable, on a model exported by
`muser export`, and ranks the tracks as PyTorch's MUSER does with the same chunks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'muser[onnx]')")

from muser.cli import main  # noqa: E402
from muser.models.muser import MUSER  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"
# Run the example with torch (and muser, which needs it) unimportable: it must need neither.
NO_TORCH = "import sys\nfor name in ('torch', 'muser', 'transformers'):\n    sys.modules[name] = None\n"


def onnx_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if "import onnxruntime" in b]
    assert len(found) == 1, "README.md must hold exactly one onnxruntime example"
    return found[0]


def test_readme_onnx_search_runs_without_torch(tmp_path):
    rate, rng = 16000, np.random.default_rng(0)
    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(int(7.5 * rate)) / rate  # 7.5 s: two whole 3-s chunks, the rest left out
    for i, freq in enumerate((110.0, 220.0, 440.0, 880.0, 1760.0, 3520.0)):
        wave = 0.4 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(music / f"track{i}.wav", wave.astype(np.float32), rate, subtype="FLOAT")
    sf.write(music / "short.wav", (0.3 * np.sin(2 * np.pi * 330 * t[:20000])).astype(np.float32), rate)
    torch.manual_seed(0)
    model = MUSER.from_preset("tiny").eval()
    model.save_pretrained(tmp_path / "model")
    res = CliRunner().invoke(
        main, ["export", str(tmp_path / "model"), "--onnx", str(tmp_path / "muser-onnx")]
    )
    assert res.exit_code == 0, res.output
    script = tmp_path / "example.py"
    script.write_text(NO_TORCH + onnx_example())
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    lines = [line.split() for line in run.stdout.strip().splitlines()]
    assert len(lines) == 5
    # The same ranking from PyTorch: consecutive 3-s chunks (a short track: one chunk), mean, unit length.
    with torch.no_grad():
        query = model.encode_text(["calm ambient music with soft pads"])[0]
        scores = {}
        for path in sorted(music.glob("*.wav")):
            wave = torch.from_numpy(sf.read(path, dtype="float32")[0])
            n = 48000
            chunks = torch.stack([wave[s : s + n] for s in range(0, max(len(wave) - n, 0) + 1, n)])
            emb = model.encode_audio(chunks).mean(0)
            scores[path.name] = float(emb @ query / emb.norm())
    want = sorted(scores, key=scores.get, reverse=True)[:5]
    assert [name for _, name in lines] == want
    for score, name in lines:
        assert abs(float(score) - scores[name]) < 1e-4
