"""`python -m muser.catalogue SPEC`: one torchrun worker of a multi-process `muser embed`.

Exit status: 0 when its shards are embedded, 1 on an error (printed), 2 on wrong usage.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from muser.catalogue.embed import run_worker
    from muser.catalogue.launch import read_spec

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m muser.catalogue EMB/.launch.json (started by `muser embed`)", file=sys.stderr)
        return 2
    try:
        run_worker(read_spec(args[0]))
    except (ValueError, RuntimeError) as err:
        print(f"muser embed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
