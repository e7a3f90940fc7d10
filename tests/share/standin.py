"""A local folder playing the hub, for tests that must run offline: it stands in for exactly the two
huggingface_hub calls muser.hub makes online (HfApi's repository/commit calls, and snapshot_download
when it may use the network). A download leaves the cache laid out as huggingface_hub's own does
(refs/<branch> -> snapshots/<commit>/), so the offline path is huggingface_hub's real code."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from huggingface_hub import snapshot_download as real_snapshot_download


class StandInHub:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.commits: list[dict] = []  # every create_commit: repo, revision, message, files {path: bytes}
        self.repos: dict[str, dict] = {}
        self.downloads = 0

    # --- HfApi ------------------------------------------------------------------------------------
    def api(self, token: str | None = None) -> StandInHub:
        return self

    def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = False, repo_type=None):
        self.repos.setdefault(repo_id, {"private": private, "branches": {"main"}})

    def create_branch(self, repo_id: str, branch: str, exist_ok: bool = False, repo_type=None) -> None:
        self.repos[repo_id]["branches"].add(branch)

    def create_commit(self, repo_id, operations, commit_message, revision=None, repo_type=None):
        branch = revision or "main"
        assert branch in self.repos[repo_id]["branches"], f"no branch {branch}"
        files = {}
        for op in operations:
            data = op.path_or_fileobj
            files[op.path_in_repo] = data if isinstance(data, bytes) else Path(data).read_bytes()
        self.commits.append({"repo": repo_id, "revision": branch, "message": commit_message, "files": files})
        folder = self.root / repo_id / branch
        for path, data in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)

        class Info:
            commit_url = f"standin://{repo_id}/commit/{branch}/{len(self.commits)}"

        return Info()

    # --- snapshot_download ------------------------------------------------------------------------
    def snapshot_download(self, repo_id, revision=None, cache_dir=None, local_files_only=False, **kw):
        if local_files_only:
            return real_snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True
            )
        branch = revision or "main"
        src = self.root / repo_id / branch
        assert src.is_dir(), f"the stand-in hub has no {repo_id}@{branch}"
        self.downloads += 1
        digest = hashlib.sha1()
        for p in sorted(src.rglob("*")):
            if p.is_file():
                digest.update(p.relative_to(src).as_posix().encode() + p.read_bytes())
        commit = digest.hexdigest()
        storage = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
        snapshot = storage / "snapshots" / commit
        if not snapshot.is_dir():
            shutil.copytree(src, snapshot)
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / branch).write_text(commit)
        return str(snapshot)


def install(monkeypatch, root: Path) -> StandInHub:
    """Point muser.hub's two online calls at a stand-in hub in `root`."""
    import huggingface_hub

    hub = StandInHub(root)
    monkeypatch.setattr(huggingface_hub, "HfApi", hub.api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    return hub
