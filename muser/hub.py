"""Model ids on the Hugging Face hub: the one module that talks to it. `resolve_model` turns what a user
typed after --checkpoint / --text-encoder / from_pretrained into a local folder; `upload` sends files in
one commit. Everything else in muser sees local folders only.

Spelling (a local path always wins over a hub id of the same spelling):
    runs/x                  the local folder when it exists, else the hub model runs/x
    org/name@rev            a hub model at a branch, tag or commit
    hf-hub:org/name[@rev]   the hub, even when a local folder of that name exists
    local-dir:PATH          the local folder, never the hub

Offline: with HF_HUB_OFFLINE=1 a cached model resolves from the cache without a network call; one that
is not cached is one sentence naming the id and the cache folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
# org/name, each part as the hub allows (letters, digits, - _ .), optionally @revision (branch, tag, sha).
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")


def offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for no network (read now, not at import, so a test can set it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> str:
    """The hub cache folder huggingface_hub uses (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/...)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """'org/name@rev' -> ('org/name', 'rev'); 'org/name' -> ('org/name', None); None if not an id."""
    match = _HUB_ID.match(text.removeprefix(HUB_PREFIX))
    return (match["repo"], match["rev"]) if match else None


def resolve_model(spec: str, ignore_patterns: list[str] | None = None) -> str:
    """A local folder for `spec`: the path itself when it exists locally (or has the local-dir: prefix),
    else the hub snapshot of an `org/name[@rev]` id (downloaded into the cache unless cached and offline).

    Anything else comes back unchanged (`random`, a missing path), for the caller's own message.
    ignore_patterns: files of the hub repository not to download (e.g. other frameworks' weights).
    """
    spec = str(spec)
    if spec.startswith(LOCAL_PREFIX):
        return spec[len(LOCAL_PREFIX) :]
    forced = spec.startswith(HUB_PREFIX)
    if not forced and Path(spec).expanduser().exists():
        return spec
    parsed = parse_hub_id(spec)
    if parsed is None:
        if forced:
            raise ValueError(f"{spec!r} is not a hub id; write hf-hub:org/name or hf-hub:org/name@revision")
        return spec
    return download(*parsed, ignore_patterns=ignore_patterns)


def download(repo_id: str, revision: str | None = None, ignore_patterns: list[str] | None = None) -> str:
    """The cached snapshot folder of a hub model (fetched when online and not cached at that revision)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = repo_id + (f"@{revision}" if revision else "")
    cache = cache_dir()
    try:
        return snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline(),
            ignore_patterns=ignore_patterns,
        )
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline() else "the hub cannot be reached"
        raise ValueError(
            f"{name} is not a local folder and not in the hub cache {cache}, and {why}: "
            "download it once online (or give its local folder)"
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"the hub model {repo_id} has no revision {revision!r}") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise ValueError(
            f"{name} is neither a local folder nor a hub model you can read "
            "(check the spelling, or log in with `hf auth login` for a private one)"
        ) from None


def upload(
    repo_id: str,
    files: dict[str, Path | bytes],
    message: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> str:
    """Create `repo_id` if needed (and branch `revision`), then send every file in ONE commit, so the hub
    never holds weights without their config or card. files: path in repo -> local file or bytes.
    Returns the commit's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    ops = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=data if isinstance(data, bytes) else str(data))
        for path, data in sorted(files.items())
    ]
    info = api.create_commit(
        repo_id, operations=ops, commit_message=message, revision=revision, repo_type="model"
    )
    return str(info.commit_url)
