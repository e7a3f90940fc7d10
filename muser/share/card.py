"""The model card (README.md with the hub's YAML front matter), written only from what the folders know:
the model's config.json and weights, the run's config.json / result.json / metrics.jsonl, the shard
manifests it trained on and `muser eval` results for this model. A fact the folders lack is left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from muser.share.run import Located, read_json, read_jsonl

TOWERS = {"waveform": "waveform tower", "spectrogram": "spectrogram tower", "text": "text tower"}


def parameter_counts(weights: Path) -> dict[str, int]:
    """Stored parameters per tower (waveform, spectrogram, text, projections) and in total, read from the
    safetensors header alone (no tensor is loaded)."""
    from safetensors import safe_open

    counts: dict[str, int] = {}
    with safe_open(str(weights), framework="np") as f:
        for key in f.keys():  # noqa: SIM118 (a safe_open handle is not a mapping)
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= int(d)
            group = key.split(".", 1)[0]
            group = group if group in TOWERS else "projections" if group.startswith("proj_") else "other"
            counts[group] = counts.get(group, 0) + n
    counts["total"] = sum(counts.values())
    return counts


def training_data(run_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Per shard folder the run trained on: path, sources, split, tracks and hours from its manifest."""
    data = run_config.get("data", {})
    rows = []
    for folder in data.get("shards", []):
        manifest = read_json(Path(folder) / "manifest.json")
        if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
            rows.append({"path": folder})
            continue
        splits = manifest["splits"]
        split = data.get("split") or ("train" if "train" in splits else "all")
        body = splits.get(split, {})
        rows.append(
            {
                "path": folder,
                "sources": manifest.get("sources", []),
                "split": split,
                "tracks": int(body.get("samples", 0)),
                "hours": float(body.get("seconds", 0.0)) / 3600,
            }
        )
    return rows


def eval_results(located: Located, extra: list[Path] = ()) -> list[dict[str, Any]]:
    """`muser eval` results.json files of this model: those under the run folder whose checkpoint is this
    model folder, and the `extra` files given (refused when they evaluated another checkpoint)."""
    mine = str(located.model_dir.resolve())
    found = []
    if located.run_dir is not None:
        for path in sorted(located.run_dir.rglob("results.json")):
            result = read_json(path)
            if isinstance(result, dict) and result.get("checkpoint", {}).get("path") == mine:
                found.append(result)
    for path in extra:
        result = read_json(Path(path))
        if not isinstance(result, dict) or "results" not in result:
            raise ValueError(f"{path} is not a `muser eval` results.json")
        if result.get("checkpoint", {}).get("path") != mine:
            raise ValueError(
                f"{path} evaluated {result.get('checkpoint', {}).get('path')}, not this model ({mine})"
            )
        found.append(result)
    return found


def _front_matter(license: str | None, datasets: list[str], text_source: str | None) -> str:
    lines = ["---", "library_name: muser"]
    if license:
        lines.append(f"license: {license}")
    lines += ["pipeline_tag: feature-extraction", "tags:"]
    lines += [f"- {t}" for t in ("muser", "audio", "music", "text-audio-retrieval", "contrastive-learning")]
    if datasets:
        lines += ["datasets:", *(f"- {d}" for d in datasets)]
    if text_source and "/" in text_source and not Path(text_source).exists():
        lines.append(f"base_model: {text_source}")  # a hub id the text tower started from
    lines.append("---")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _eval_table(result: dict[str, Any]) -> list[str]:
    rows = [
        f"**{result.get('task')}** ({result.get('label_task')}, {result.get('split_scheme')}), "
        "values in percent, mean ± std over folds and seeds:",
        "",
        "| model | protocol | fraction | metric | mean ± std | Δ random | Δ mfcc |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result.get("results", []):
        margins = row.get("margins", {})
        signed = {k: "-" if v is None else f"{100 * v:+.1f}" for k, v in margins.items()}
        frac = "-" if row.get("fraction") is None else f"{row['fraction']:g}"
        rows.append(
            f"| {row.get('model')} | {row.get('protocol')} | {frac} | {row.get('metric')} | "
            f"{_pct(row.get('mean'))} ± {_pct(row.get('std'))} | {signed.get('random', '-')} | "
            f"{signed.get('mfcc', '-')} |"
        )
    return [*rows, ""]


def build_card(
    located: Located,
    repo_id: str | None = None,
    evals: list[dict[str, Any]] = (),
    license: str | None = None,
    datasets: list[str] = (),
) -> str:
    """The card's Markdown. repo_id: the hub id the usage snippets load (default: the local folder)."""
    meta = read_json(located.model_dir / "config.json") or {}
    model = meta.get("model", {})
    text_source = meta.get("text", {}).get("source")
    run = located.run_dir
    run_config = (read_json(run / "config.json") or {}) if run else {}
    result = (read_json(run / "result.json") or {}) if run else {}
    metrics = read_jsonl(run / "metrics.jsonl") if run else []
    name = repo_id or str(located.model_dir)
    out = [_front_matter(license, list(datasets), text_source), "", f"# {name.rsplit('/', 1)[-1]}", ""]
    out += [
        "A MUSER model: audio (raw waveform and log spectrogram towers) and text "
        "(metadata sentences) embedded into one L2-normalised space by tri-modal contrastive pretraining.",
        "",
        "## Model",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for key, label in (
        ("preset", "preset"),
        ("embed_dim", "embedding dimension"),
        ("sample_rate", "sample rate (Hz)"),
        ("spec_kind", "spectrogram"),
        ("n_mels", "spectrogram bins"),
        ("audio_embedding", "audio embedding"),
        ("text_max_length", "text tokens (max)"),
    ):
        if key in model:
            out.append(f"| {label} | {model[key]} |")
    out.append(f"| text tower | {text_source or 'built in (WordPiece tokenizer + small BERT)'} |")
    if meta.get("muser_version"):
        out.append(f"| muser version | {meta['muser_version']} |")
    weights = located.model_dir / "model.safetensors"
    if weights.is_file():
        counts = parameter_counts(weights)
        parts = ", ".join(f"{g} {counts[g]:,}" for g in (*TOWERS, "projections") if g in counts)
        out.append(f"| parameters | {counts['total']:,} ({parts}) |")
    out.append("")
    out += _training(run_config, result, metrics)
    if evals:
        out += ["## Evaluation", ""]
        for res in evals:
            out += _eval_table(res)
    out += _usage(name)
    return "\n".join(out).rstrip() + "\n"


def _training(config: dict[str, Any], result: dict[str, Any], metrics: list[dict[str, Any]]) -> list[str]:
    if not config:
        return []
    data, train = config.get("data", {}), config.get("train", {})
    out = ["## Training", ""]
    rows = training_data(config)
    if rows:
        out += ["| shard folder | sources | split | tracks | hours |", "|---|---|---|---|---|"]
        for r in rows:
            if "tracks" in r:
                sources = ", ".join(r["sources"])
                out.append(f"| {r['path']} | {sources} | {r['split']} | {r['tracks']} | {r['hours']:.2f} |")
            else:
                out.append(f"| {r['path']} | - | - | - | - |")
        if all("tracks" in r for r in rows) and len(rows) > 1:
            tracks, hours = sum(r["tracks"] for r in rows), sum(r["hours"] for r in rows)
            out.append(f"| **total** | | | {tracks} | {hours:.2f} |")
        out.append("")
    facts = []
    steps = result.get("steps")
    if steps is not None:
        total = result.get("total_steps")
        facts.append(f"steps: {steps}" + (f" of {total}" if total and total != steps else ""))
    for key, label in (("batch_size", "global batch"), ("crop_seconds", "crop (s)")):
        if key in data:
            facts.append(f"{label}: {data[key]}")
    for key, label in (("loss", "objective"), ("lr", "learning rate"), ("precision", "precision")):
        if key in train:
            facts.append(f"{label}: {train[key]}")
    if result.get("first_loss") is not None and result.get("last_loss") is not None:
        facts.append(
            f"loss: {result['first_loss']:.4f} (first step) -> {result['last_loss']:.4f} (last step)"
        )
    last = metrics[-1] if metrics else {}
    terms = {
        k: v for k, v in last.items() if k.startswith(("loss_", "scale_")) and isinstance(v, (int, float))
    }
    if terms:
        facts.append(
            f"at step {last.get('step')}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(terms.items()))
        )
    world = config.get("world_size")
    if world is not None:
        gpus = train.get("gpus", 0)
        device = f"{gpus} GPU(s)" if gpus else "CPU"
        facts.append(f"hardware: {device}, world size {world}")
    if result.get("wall_s") is not None:
        facts.append(f"wall time: {result['wall_s'] / 3600:.2f} h")
    if result.get("samples_per_s") is not None:
        facts.append(f"throughput: {result['samples_per_s']:.1f} samples/s")
    valid = result.get("eval") or {}
    if valid:
        facts.append("validation at the end: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(valid.items())))
    return [*out, *(f"- {f}" for f in facts), ""]


def _usage(name: str) -> list[str]:
    return [
        "## Use",
        "",
        "Python (`pip install muser`):",
        "",
        "```python",
        "import torch",
        "from muser import MUSER",
        "",
        f'model = MUSER.from_pretrained("{name}").eval()',
        "with torch.no_grad():",
        "    audio = model.encode_audio(wave)  # wave: (B, T) float32 in [-1, 1] at the sample rate above",
        '    text = model.encode_text(["A song of jazz, whose style is calm."])',
        "scores = audio @ text.T  # cosine similarities",
        "```",
        "",
        "Command line:",
        "",
        "```bash",
        f"muser embed my_music/ --checkpoint {name} -o catalogue",
        'muser search catalogue "calm piano with strings"',
        "```",
        "",
        'ONNX (no PyTorch at inference; see muser\'s README, "Share a model"):',
        "",
        "```bash",
        f"muser export {name} --onnx muser-onnx",
        "```",
        "",
    ]
