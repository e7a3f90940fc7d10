"""`muser demo`: the whole MUSER loop on the built-in procedural corpus, on CPU in minutes.

Generate an FMA-layout corpus (genres, parent genres, tags, moods, titles, artists: captions as rich as a
real catalogue's), shard it, pretrain the tiny preset with L(A,T) + L(S,T) on the train split, then evaluate
on the held-out test split: zero-shot, linear/MLP probe and retrieval, against random weights and MFCCs,
and end with the corpus as a searchable catalogue (`muser embed`) and one text search over it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from muser.atomic import atomic_write_json
from muser.config import (
    DEFAULT_PRESET,
    DEMO_OUT,
    DataConfig,
    EvalConfig,
    ServeConfig,
    ShardConfig,
    TrainConfig,
    preset,
)
from muser.console import make_console
from muser.runs import RunFolder


@dataclass
class DemoSize:
    """How much work one demo run does; `quick` is the ~1-minute smoke version."""

    n_per_class: int  # tracks per style (6 styles; split 60/20/20 train/valid/test)
    seconds: float  # track length
    steps: int  # pretraining steps
    batch_size: int
    seeds: int  # probe seeds
    difficulty: float = 0.4  # styles borrow each other's tempo, drums and timbre (0 = trivially separable)
    fractions: tuple[float, ...] = (1.0,)  # training fractions of the probe (the few-shot curve)


FULL = DemoSize(
    n_per_class=40, seconds=8.0, steps=400, batch_size=16, seeds=3, fractions=(0.1, 0.25, 0.5, 1.0)
)
QUICK = DemoSize(n_per_class=10, seconds=6.0, steps=60, batch_size=16, seeds=1)

REAL_DATA_HINT = """\
[bold]The same on real data[/bold]
  # FMA-small, with fma_metadata/ beside fma_small/
  muser shard fma_small/ shards/fma
  # MagnaTagATune, and GTZAN with its fault-filtered split lists
  muser shard magnatagatune/ shards/mtt
  muser shard gtzan/ shards/gtzan --split-dir gtzan/
  # any folder of tagged music, optionally with a metadata sidecar
  muser shard my_music/ shards/mine --metadata sidecar.csv
  muser pretrain --shards shards/fma --shards shards/mtt \\
      --output runs/x --gpus 8 --preset base
  muser eval gtzan --data shards/gtzan --checkpoint runs/x \\
      --protocol all --baseline mfcc
[bold]Real music on this machine[/bold] (../shared/data/get-real-corpus.sh real/)
  muser shard real/gtzan shards/gtzan-real \\
      --metadata real/gtzan/labels.csv \\
      --valid-fraction 0.15 --test-fraction 0.3
  muser shard real/medley_solos shards/medley \\
      --metadata real/medley_solos/labels.csv
  # the default recipe (1.5-s crops); 3000 steps: under 30 minutes on 2 CPU cores
  muser pretrain --shards shards/gtzan-real --shards shards/medley \\
      --output runs/real --steps 3000
  muser eval shards --data shards/gtzan-real --label-task genre \\
      --checkpoint runs/real --probe logistic,marble --baseline mfcc"""


def run_demo(
    out: str | Path = DEMO_OUT,
    quick: bool = False,
    seed: int = 0,
    console: Console | None = None,
    size: DemoSize | None = None,
) -> dict:
    """Run corpus -> shards -> pretrain -> eval under `out`; returns a summary (also out/demo.json).

    `size` overrides the FULL/QUICK presets (tests use a smaller one)."""
    from muser.eval.runner import run_eval
    from muser.shards.writer import write_shards
    from muser.synth import make_corpus
    from muser.train import pretrain

    console = console or make_console()
    size = size or (QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(title: str) -> float:
        console.rule(f"[bold]{title}")
        return time.perf_counter()

    # 1. A corpus in the real FMA layout: held-out test tracks come from tracks.csv's split column.
    t0 = stage("1/5  built-in corpus (FMA layout, 6 styles)")
    corpus = out / "corpus"
    if not (corpus / "fma_metadata" / "tracks.csv").is_file():
        make_corpus(
            corpus,
            layout="fma",
            n_per_class=size.n_per_class,
            seconds=size.seconds,
            seed=seed,
            difficulty=size.difficulty,
        )
    timings["corpus_s"] = time.perf_counter() - t0

    # 2. Shards (resumes, so a second `muser demo` reuses them).
    t0 = stage("2/5  muser shard")
    shards = out / "shards"
    write_shards(ShardConfig(src=str(corpus / "fma_small"), dst=str(shards), source="fma", workers=2))
    timings["shard_s"] = time.perf_counter() - t0

    # 3. Pretraining of the tiny preset on the train split (the GPU when there is one). A run is reused
    # only when result.json says it finished; an interrupted one resumes from last.pt.
    from muser.distributed import choose_device

    gpus = 1 if choose_device("auto").type == "cuda" else 0
    t0 = stage(f"3/5  muser pretrain (tiny preset, {size.steps} steps, {'GPU' if gpus else 'CPU'})")
    run = out / "run"
    finished = _finished_run(run)
    train = TrainConfig(
        output=str(run),
        gpus=gpus,
        steps=size.steps,
        warmup=max(5, size.steps // 10),
        lr=2e-3,
        save_every=max(50, size.steps // 2),
        log_every=10,
        seed=seed,
        resume=finished is None and RunFolder(run).last.is_file(),
    )
    data = DataConfig(shards=[str(shards)], batch_size=size.batch_size, crop_seconds=3.0, num_workers=1)
    if finished is not None:
        console.print(f"reusing the finished run in {run}")
        trained = finished
    else:
        trained = pretrain(data, preset(DEFAULT_PRESET), train)
        if trained.get("stopped"):
            raise DemoInterrupted(
                f"pretraining stopped by {trained['stopped']} at step {trained['steps']}; "
                f"run the same command again to resume from {RunFolder(run).last}"
            )
    timings["pretrain_s"] = time.perf_counter() - t0

    # 4. Downstream evaluation on the held-out test split, with both baselines in the same report.
    t0 = stage("4/5  muser eval (held-out test tracks)")
    result = run_eval(
        EvalConfig(
            task="fma",
            checkpoint=str(RunFolder(run).model),
            data=str(shards),
            protocol="probe,zeroshot,retrieval",
            seeds=size.seeds,
            fractions=size.fractions,
            output=str(out / "eval"),
            baseline="mfcc",
            chunk_seconds=3.0,
            seed=seed,
        ),
        console=console,
    )
    timings["eval_s"] = time.perf_counter() - t0

    # 5. The corpus as a catalogue: every track embedded once, then one text search over it.
    t0 = stage("5/5  muser embed (the corpus as a searchable catalogue)")
    catalogue, hits = _catalogue(out, shards, RunFolder(run).model, retrained=finished is None)
    timings["catalogue_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    summary = {
        "quick": quick,
        "size": size.__dict__,
        "pretrain": {k: trained.get(k) for k in ("steps", "first_loss", "last_loss", "samples_per_s")},
        "eval": {
            f"{r['model']} {r['protocol']} {r['metric']}": r["mean"]
            for r in result["results"]
            if r.get("fraction") in (None, 1.0)
        },
        "search": {
            "query": DEMO_QUERY,
            "results": [{k: h[k] for k in ("key", "score", "genres")} for h in hits],
        },
        "timings": timings,
        "paths": {
            "corpus": str(corpus),
            "shards": str(shards),
            "run": str(run),
            "model": str(RunFolder(run).model),
            "catalogue": str(catalogue),
            **result.get("outputs", {}),
        },
    }
    atomic_write_json(out / "demo.json", summary)
    _print_summary(console, summary)
    _print_search(console, catalogue, hits)
    return summary


class DemoInterrupted(RuntimeError):
    """Pretraining was stopped by a signal; its checkpoint is saved and a second run resumes it."""


def _finished_run(run: Path) -> dict[str, Any] | None:
    """The run's result.json when that run completed (not stopped by a signal), else None."""
    folder = RunFolder(run)
    result = folder.read_result()
    complete = result is not None and not result.get("stopped") and folder.has_model()
    return result if complete else None


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    pre = summary["pretrain"]
    table = Table(title="muser demo: what text supervision bought (held-out test tracks)")
    table.add_column("model")
    table.add_column("protocol")
    table.add_column("metric")
    table.add_column("value %", justify="right")
    for name, value in summary["eval"].items():
        model, protocol, metric = name.split(" ", 2)
        table.add_row(model, protocol, metric, "-" if value is None else f"{100 * value:.1f}")
    console.print(table)
    console.print(
        f"pretraining loss {pre['first_loss']:.3f} -> {pre['last_loss']:.3f} over {pre['steps']} steps; "
        f"whole demo {summary['timings']['total_s'] / 60:.1f} min"
    )
    paths = summary["paths"]
    console.print(
        Panel.fit(
            "\n".join(f"{k:>14}: {v}" for k, v in paths.items()) + "\n\n" + REAL_DATA_HINT,
            title="where things are",
        )
    )


DEMO_QUERY = "a calm ambient song with soft synths"


def _catalogue(out: Path, shards: Path, model: Path, retrained: bool) -> tuple[Path, list[dict[str, Any]]]:
    """Embed the demo shards into out/catalogue (resumed when the model is the same; rebuilt after a new
    pretraining) and run DEMO_QUERY over it."""
    from muser.catalogue.embed import embed
    from muser.catalogue.search import Catalogue
    from muser.config import EmbedConfig

    catalogue = out / "catalogue"
    # No reader workers: starting them costs more than decoding a few hundred short clips.
    embed(EmbedConfig([str(shards)], str(catalogue), str(model), num_workers=0, overwrite=retrained))
    return catalogue, Catalogue.open(catalogue).search_text(DEMO_QUERY, k=5)


def _print_search(console: Console, catalogue: Path, hits: list[dict[str, Any]]) -> None:
    from muser.catalogue.display import hits_table

    console.print(hits_table(hits, f"muser search: {DEMO_QUERY}"))
    console.print(
        "Search the catalogue again, or browse and play it in a web page:\n"
        f'  muser search {catalogue} "slow blues guitar" --top 10\n'
        f"  muser serve {catalogue}    # then open http://{ServeConfig.host}:{ServeConfig.port}",
        soft_wrap=True,
    )
