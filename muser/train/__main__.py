"""`python -m muser.train SPEC`: one torchrun worker of a multi-process `muser pretrain`.

Exit status: 0 when done or stopped by SIGTERM, 130 after SIGINT, 1 on a user error (printed), 2 on
wrong usage.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from muser.train.launch import read_spec
    from muser.train.trainer import pretrain

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m muser.train RUN/launch-node0.json (started by `muser pretrain`)",
            file=sys.stderr,
        )
        return 2
    try:
        result = pretrain(*read_spec(args[0]))
    except (ValueError, RuntimeError) as err:
        print(f"muser pretrain: {err}", file=sys.stderr)
        return 1
    return 130 if result.get("stopped") == "SIGINT" else 0


if __name__ == "__main__":
    sys.exit(main())
