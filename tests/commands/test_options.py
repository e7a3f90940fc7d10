"""The one exit-status rule of the command line: a mistake in what was given (ValueError, KeyError) exits 2
as a usage error, a failure of the world (RuntimeError, OSError) exits 1; one sentence, never a traceback,
the same in every command."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from muser.cli import main
from muser.commands.options import user_errors


@pytest.mark.parametrize(
    "error, status, says",
    [
        (ValueError("--x must be positive"), 2, "--x must be positive"),
        (KeyError("no track 'k' in the catalogue"), 2, "no track 'k' in the catalogue"),
        (RuntimeError("the disk is full"), 1, "the disk is full"),
        (PermissionError(13, "Permission denied", "/x/y"), 1, "/x/y: Permission denied"),
    ],
)
def test_each_kind_of_error_has_one_exit_status(error: Exception, status: int, says: str) -> None:
    @click.command()
    @user_errors
    def failing() -> None:
        raise error

    res = CliRunner().invoke(failing, [])
    assert res.exit_code == status and says in res.output and "Traceback" not in res.output, res.output
    assert '"no track' not in res.output  # a KeyError's message is shown as written, not repr'd


def test_click_aborts_pass_through() -> None:
    @click.command()
    @user_errors
    def aborted() -> None:
        raise click.Abort()

    assert CliRunner().invoke(aborted, []).exit_code == 1


def test_the_same_mistake_exits_2_in_every_command(tmp_path) -> None:
    """A folder that is not what the command reads is a ValueError in each library; every command says so
    with exit status 2 (before the rule, inspect, eval and export exited 1 and embed, search exited 2)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    runs = {
        "inspect": ["inspect", str(empty)],
        "search": ["search", str(empty), "piano"],
        "eval": [
            "eval",
            "shards",
            "--data",
            str(empty),
            "--checkpoint",
            "random",
            "--output",
            str(tmp_path / "o"),
        ],
        "card": ["card", str(empty)],
    }
    for name, args in runs.items():
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and "Traceback" not in res.output, (name, res.output)
        assert res.output.strip().splitlines()[-1].startswith("Error:"), (name, res.output)
