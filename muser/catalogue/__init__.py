"""The catalogue: embed shard folders once (`embed`), search them by text, audio or key (`search`), and
serve one page and a JSON API in front of them (`serve`)."""
