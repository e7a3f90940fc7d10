"""What every `muser` command shares: options whose defaults come from a config field, and the one rule
that maps a library error onto an exit status.

The rule (`user_errors`): a `ValueError` or `KeyError` is a mistake in what the user gave (an option, a
path, a key), exit status 2 as click gives a bad option; a `RuntimeError` or `OSError` is the world
failing under a correct command (a disk, a missing package, unreadable data), exit status 1. Either way
the user reads one sentence, never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click


def config_option(
    cls: type, flag: str, kind: Any, what: str, name: str = "", shown: object = True, **extra: Any
) -> Callable:
    """An option whose default is the config field cls.name (shown in --help, or `shown` when that is text);
    name, the field and parameter name, defaults to the flag's (--max-count -> max_count)."""
    name = name or flag.lstrip("-").replace("-", "_")
    return click.option(
        flag, name, type=kind, default=getattr(cls, name), show_default=shown, help=what, **extra
    )


def override_option(flag: str, cls: type, name: str, kind: Any, what: str, **extra: Any) -> Callable:
    """An option that overrides config field cls.name only when given (None keeps the config's or a resumed
    run's value); its help names the field's default, read from the config (each default written once)."""
    return click.option(
        flag, type=kind, default=None, help=f"{what} (default {default_of(cls, name)}).", **extra
    )


def default_of(cls: type, name: str) -> object:
    """The default of a config field, for help texts."""
    return getattr(cls, name)


class Mistake(click.ClickException):
    """A mistake in what the user gave: "Error: <sentence>" and exit status 2, without click's usage banner
    (the sentence says what to change; a log keeps one line per failure)."""

    exit_code = 2


def _sentence(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:  # str(KeyError('x')) is "'x'"
        return str(err.args[0])
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def user_errors(command: Callable) -> Callable:
    """Apply the exit-status rule above to a command function (put it under the click decorators)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (click.exceptions.Abort, click.exceptions.Exit):  # click's own, RuntimeErrors by descent
            raise
        except (ValueError, KeyError) as err:
            raise Mistake(_sentence(err)) from None
        except (RuntimeError, OSError) as err:
            raise click.ClickException(_sentence(err)) from None

    return run
