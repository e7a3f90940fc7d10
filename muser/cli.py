"""The `muser` command line: one click group gathering the commands of muser.commands (one module per
room) and muser.share.cli; each command builds a config and calls one library function.

Imports of heavy modules (torch, the model, the data engine) happen inside the commands so that
`muser --help` answers at once.
"""

from __future__ import annotations

import click

from muser import __version__
from muser.commands.catalogue import embed_cmd, search_cmd, serve_cmd
from muser.commands.data import inspect_cmd, shard
from muser.commands.demo import demo
from muser.commands.eval import eval_cmd
from muser.commands.train import pretrain
from muser.share.cli import register as register_share_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="muser")
def main() -> None:
    """MUSER: learn music representations from text metadata.

    \b
    muser shard fma_small/ shards/                 pack audio + metadata into tar shards
    muser inspect shards/                          what a shard folder holds
    muser pretrain --shards shards/ --gpus 8       tri-modal contrastive pretraining
    muser eval gtzan --checkpoint runs/x/model     downstream protocols
    muser embed shards/ --checkpoint runs/x -o cat a searchable catalogue of the tracks
    muser search cat "calm piano"                  search it; `muser serve cat` for a web page
    muser demo                                     the whole loop on a built-in corpus
    """


for _command in (shard, inspect_cmd, pretrain, eval_cmd, embed_cmd, search_cmd, serve_cmd, demo):
    main.add_command(_command)
register_share_commands(main)  # muser export / card / push (muser.share.cli)

if __name__ == "__main__":
    main()
