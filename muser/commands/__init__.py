"""The commands of the `muser` command line, one module per application room (data, train, eval,
catalogue, demo); `muser.cli` gathers them into one click group. `options` holds the one option helper
and the one error-mapping rule every command uses."""
