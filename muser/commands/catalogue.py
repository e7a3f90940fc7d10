"""`muser embed`, `muser search`, `muser serve`: the catalogue room's commands (muser.catalogue)."""

from __future__ import annotations

import click

from muser.commands.options import config_option, user_errors
from muser.config import INDEX_KINDS, TOWERS, EmbedConfig, SearchConfig, ServeConfig


@click.command("embed")
@click.argument("src", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--checkpoint", required=True, help="A run folder, its model/ folder, hub id org/name[@rev] or `random`."
)
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Catalogue folder EMB.")
@config_option(
    EmbedConfig,
    "--chunk-seconds",
    click.FloatRange(0.0, min_open=True),
    "Chunk length of the whole-track features (as `muser eval`).",
)
@click.option(
    "--tower",
    type=click.Choice(TOWERS),
    default=None,
    help="Audio tower to embed with (default: what the model was trained with).",
)
@config_option(
    EmbedConfig,
    "--index",
    click.Choice(INDEX_KINDS),
    "auto: exact up to N x D = 16.8M, else IVF (PQ + exact re-ranking beyond --index-memory); "
    "flat: exact inner product; hnsw: approximate graph.",
)
@click.option(
    "--index-key",
    default=None,
    help="A FAISS factory string instead of --index, e.g. IVF4096,PQ64x4fs,RFlat or IVF1024,Flat.",
)
@click.option(
    "--index-memory",
    default=None,
    help="RAM budget of --index auto, e.g. 2G (default: a quarter of the vectors' size, at least 256M).",
)
@config_option(EmbedConfig, "--batch-size", click.IntRange(1), "Chunks per forward pass.")
@config_option(EmbedConfig, "--workers", click.IntRange(0), "Reader processes per rank.", name="num_workers")
@click.option(
    "--gpus",
    type=click.IntRange(0),
    default=None,
    help="0 = CPU, 1 = one GPU, N > 1 = N GPUs under torchrun (default: a GPU when there is one).",
)
@click.option("--procs", type=click.IntRange(0), default=0, help="CPU processes under torchrun (gloo).")
@click.option(
    "--ray",
    default=None,
    metavar="ADDRESS",
    help="Embed each shard as a task on a Ray cluster: auto (this machine's cluster), an address, or local.",
)
@click.option("--nnodes", type=click.IntRange(1), default=1, help="Machines taking part (torchrun).")
@click.option("--node-rank", type=click.IntRange(0), default=0, help="This machine's index among --nnodes.")
@click.option("--master-addr", default="127.0.0.1", help="Address of node 0 (several nodes).")
@click.option("--master-port", type=int, default=29500, help="Port on node 0 (several nodes).")
@click.option("--overwrite", is_flag=True, help="Delete EMB's catalogue and start over.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where a raw SRC folder is sharded once (default EMB/../.muser_cache, as `muser eval` does).",
)
@config_option(EmbedConfig, "--preset", str, "Architecture of `random`.")
@config_option(EmbedConfig, "--seed", int, "Seed of `random`.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary table.")
@user_errors
def embed_cmd(src: tuple[str, ...], quiet: bool, **options: object) -> None:
    """Embed the tracks of SRC (shard folders, or folders of audio) into a searchable catalogue EMB.

    Writes EMB/embeddings.parquet (one row per track: key, audio and caption embeddings, metadata, shard
    + member), EMB/index.faiss and EMB/catalogue.json. Each shard is committed as it is done: a killed run
    resumes when the same command runs again; new SRC folders are added to an existing catalogue.

    \b
    Examples:
      muser embed shards/fma --checkpoint runs/x --output catalogue/fma
      muser embed shards/fma shards/mtt --checkpoint runs/x -o catalogue/all --gpus 8 --index-memory 4G
      muser embed my_music/ --checkpoint runs/x/model -o catalogue/mine
    """
    import json

    from muser.catalogue.display import print_embed_summary
    from muser.catalogue.embed import embed
    from muser.console import make_console

    cfg = EmbedConfig(sources=list(src), progress=not quiet, **options)  # type: ignore[arg-type]
    summary = embed(cfg)
    if not quiet and "catalogue" in summary:  # node 0 (or one machine): it assembled the catalogue
        print_embed_summary(summary, make_console(stderr=True))
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "catalogue"}))


def _years(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    from muser.catalogue.search import parse_years

    try:
        return parse_years(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command("search")
@click.argument("emb", type=click.Path(exists=True, file_okay=False))
@click.argument("query", required=False)
@click.option(
    "--top", "-k", type=click.IntRange(1), default=SearchConfig.k, show_default=True, help="Results to show."
)
@click.option(
    "--audio", type=click.Path(exists=True, dir_okay=False), help="Query by example: tracks like this file."
)
@click.option("--similar", "similar_key", help="Tracks like this catalogue track (its key).")
@click.option("--genre", help="Only tracks with this genre.")
@click.option("--tag", help="Only tracks with this tag.")
@click.option("--artist", help="Only tracks whose artist contains this.")
@click.option("--year", callback=_years, help="1998, 1990-2000, 1990- or -2000.")
@click.option("--checkpoint", help="Model (folder, hub id) for text/audio queries (default: catalogue's).")
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A file of text queries, one a line: searched in one batch, one JSON line of results each.",
)
@click.option(
    "--nprobe", type=click.IntRange(1), help="IVF index: lists scanned per query (recall vs speed)."
)
@click.option("--ef-search", type=click.IntRange(1), help="HNSW index: candidate list per query.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@user_errors
def search_cmd(
    emb: str,
    query: str | None,
    top: int,
    audio: str | None,
    similar_key: str | None,
    checkpoint: str | None,
    queries_file: str | None,
    nprobe: int | None,
    ef_search: int | None,
    as_json: bool,
    **filters: object,
) -> None:
    """Search the catalogue EMB by text (QUERY), by example (--audio), by a track (--similar) or by a file
    of text queries (--queries).

    \b
    Examples:
      muser search catalogue/fma "calm piano with strings" --top 5
      muser search catalogue/fma --audio clip.mp3 --genre jazz --year 1990-2000
      muser search catalogue/fma --similar fma_000426 --json
      muser search catalogue/fma --queries queries.txt --nprobe 64 > results.jsonl
    """
    import json

    from muser.catalogue.display import hits_table
    from muser.catalogue.search import read_queries, run_batch, run_search
    from muser.console import make_console

    tuning = {"nprobe": nprobe, "ef_search": ef_search}
    if queries_file:
        if query or audio or similar_key:
            raise click.UsageError("--queries replaces QUERY, --audio and --similar; give only one of them")
        batch = run_batch(emb, read_queries(queries_file), top, checkpoint, **tuning, **filters)
        for item in batch["queries"]:
            click.echo(json.dumps(item, ensure_ascii=False))
        t = batch["timing"]
        click.echo(
            f"{t['queries']} queries: text tower {t['embed_s']:.3f} s, search {t['search_s']:.3f} s "
            f"({t['queries_per_s']} queries/s)",
            err=True,
        )
        return
    out = run_search(emb, query, audio, similar_key, top, checkpoint, **tuning, **filters)
    if as_json:
        click.echo(json.dumps(out, indent=1, ensure_ascii=False))
        return
    seed = out.get("track") or {}
    named = " by ".join(x for x in (seed.get("title"), seed.get("artist")) if x) or out["query"]
    title = {"text": f"text: {out['query']}", "audio": f"sounds like {out['query']}"}.get(out["kind"])
    make_console().print(hits_table(out["results"], title or f"tracks like {named}"))


@click.command("serve")
@click.argument("emb", type=click.Path(exists=True, file_okay=False))
@click.option("--checkpoint", help="Model (folder or hub id) for text queries (default: the catalogue's).")
@click.option(
    "--host", default=ServeConfig.host, show_default=True, help="Address to bind (0.0.0.0: everyone)."
)
@click.option("--port", type=click.IntRange(1, 65535), default=ServeConfig.port, show_default=True)
@click.option("--device", default=ServeConfig.device, show_default=True, help="auto | cpu | cuda")
@user_errors
def serve_cmd(emb: str, checkpoint: str | None, host: str, port: int, device: str) -> None:
    """A search page and JSON API over the catalogue EMB, with audio streamed from its shards.

    \b
    Examples:
      muser serve catalogue/fma                 # then open http://127.0.0.1:8000
      muser serve catalogue/fma --port 9000 --checkpoint runs/x
    """
    from muser.catalogue.serve import serve

    click.echo(f"muser serve: loading {emb} and its model ...", err=True)

    def announce(url: str) -> None:
        click.echo(f"muser serve: {url}  (Ctrl-C to stop)", err=True)

    serve(emb, checkpoint=checkpoint, host=host, port=port, device=device, announce=announce)
