"""`muser card` and `muser push`: the card written beside the model, or the model folder and its card sent
to the hub in one commit (through muser.hub, the one module that talks to the hub)."""

from __future__ import annotations

from pathlib import Path

from muser.atomic import atomic_write_text
from muser.hub import parse_hub_id, upload
from muser.share.card import build_card, eval_results
from muser.share.run import Located, locate, read_json

CARD = "README.md"


def make_card(
    spec: str,
    repo_id: str | None = None,
    eval_files: list[str] = (),
    license: str | None = None,
    datasets: list[str] = (),
) -> tuple[Located, str]:
    """(the located model, its card) for a run folder, a model folder or a hub id."""
    located = locate(spec)
    evals = eval_results(located, [Path(p) for p in eval_files])
    return located, build_card(located, repo_id, evals, license, list(datasets))


def write_card(spec: str, output: str | None = None, **options) -> Path:
    """Write the card to `output` (default: README.md in the model folder, where the hub shows it)."""
    located, card = make_card(spec, **options)
    path = Path(output) if output else located.model_dir / CARD
    atomic_write_text(path, card)
    return path


def model_files(model_dir: Path) -> dict[str, Path]:
    """Every file of the model folder by its path in the repository (the card is regenerated, not sent)."""
    return {
        p.relative_to(model_dir).as_posix(): p
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and p.name != CARD and not p.name.startswith(".")
    }


def push(
    spec: str,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    **options,
) -> str:
    """Upload the model folder of `spec` and its generated card to `repo_id` in one commit -> commit URL."""
    parsed = parse_hub_id(repo_id)
    if parsed is None or parsed[1] is not None:
        raise ValueError(
            f"{repo_id!r} is not a hub repository id; write org/name (the branch goes in --revision)"
        )
    located, card = make_card(spec, repo_id=repo_id, **options)
    files: dict[str, Path | bytes] = {**model_files(located.model_dir), CARD: card.encode("utf-8")}
    steps = ""
    if located.run_dir is not None:
        result = read_json(located.run_dir / "result.json") or {}
        steps = f" after {result['steps']} steps" if "steps" in result else ""
    message = f"muser push: {located.run_dir or located.model_dir}{steps}"
    return upload(repo_id, files, message, private=private, revision=revision, token=token)
