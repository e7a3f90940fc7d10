"""The `muser` command line: a click group; each command builds a config and calls one library function.

Imports of heavy modules (torch, the model, the data engine) happen inside the commands so that
`muser --help` answers at once.
"""

from __future__ import annotations

import click

from muser import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="muser")
def main() -> None:
    """MUSER: learn music representations from text metadata.

    \b
    muser shard fma_small/ shards/                 pack audio + metadata into tar shards
    muser inspect shards/                          what a shard folder holds
    muser pretrain --shards shards/ --gpus 8       tri-modal contrastive pretraining
    muser eval gtzan --checkpoint runs/x/model     downstream protocols
    muser demo                                     the whole loop on a built-in corpus
    """


# --- shard / inspect (muser.shards) -----------------------------------------------------------------


# --- pretrain (muser.train) -------------------------------------------------------------------------


# --- eval (muser.eval) ------------------------------------------------------------------------------


# --- demo (muser.demo) ------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
