"""Captions from track metadata: sentence templates, field dropout, stable caption ids, zero-shot prompts.

A template is a sentence with `{field}` placeholders; it is only used for a track when every field it names
is available, so a missing field can never leave a dangling "{}", "nan" or empty list in the text.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Placeholders a template may use. Category fields are lower-cased in the sentence (a genre is a word, not a
# name); title/artist/album/description keep their casing.
FIELDS = ("genre", "parent_genre", "tags", "mood", "title", "artist", "album", "year", "description")
_CATEGORY = {"genre", "parent_genre", "tags", "mood"}
_MISSING = {"", "nan", "none", "null", "n/a", "na", "unknown", "[]"}

PAPER_TEMPLATE = "A song of {genre}, belongs to {parent_genre}, whose style is {tags}."
FALLBACK_TEMPLATE = "A piece of music."


@dataclass(frozen=True)
class Template:
    """One caption template and the metadata fields it needs."""

    text: str
    fields: frozenset[str]


def parse_template(text: str, where: str = "template") -> Template:
    """Validate a template string and return it with its required fields; `where` names it in errors."""
    text = text.strip()
    if not text:
        raise ValueError(f"{where}: the template is empty; write a sentence with {{field}} placeholders.")
    fields = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(
            f"{where}: unbalanced braces in {text!r} ({exc}); use {{field}} placeholders."
        ) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FIELDS or spec or conversion:
            raise ValueError(
                f"{where}: unknown placeholder {{{name}}} in {text!r}; "
                f"use plain placeholders among {', '.join('{' + f + '}' for f in FIELDS)}."
            )
        fields.add(name)
    return Template(text, frozenset(fields))


# Ordered by preference: eval mode takes the first template whose fields are all available, so the richest
# sentences come first (the paper's own sentence before its shorter variants).
TEMPLATES: tuple[Template, ...] = tuple(
    parse_template(t)
    for t in (
        PAPER_TEMPLATE,
        "A {genre} song whose style is {tags}.",
        "A {genre} track, a branch of {parent_genre}.",
        "{title} by {artist}, a {genre} song.",
        "A {mood} {genre} song.",
        "A {genre} song by {artist} from the album {album}.",
        "A {genre} recording from {year}.",
        "A song of {genre}.",
        "Music tagged {tags}.",
        "A track that sounds {mood}.",
        "{title} by {artist}.",
        "A song by {artist} from the album {album}.",
        "A song by {artist}, released in {year}.",
        "A song described as {description}.",
        "A song by {artist}.",
        "A song called {title}.",
        "A song from {year}.",
        FALLBACK_TEMPLATE,
    )
)


def load_templates(path: str | Path) -> tuple[Template, ...]:
    """Read a user templates file: one template per line with `{field}` placeholders; `#` comments and blank
    lines are ignored. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"templates file {path} does not exist; pass a text file with one template per line."
        )
    templates = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        templates.append(parse_template(line, where=f"{path}:{lineno}"))
    if not templates:
        raise ValueError(f"templates file {path} has no templates; write one sentence per line.")
    return tuple(templates)


# The metadata JSON contract (DESIGN.md section 4): which fields must have which JSON shape. A member
# that breaks it is skipped and counted by the reader, never allowed to crash a worker mid-run.
_SCALAR_OR_LIST = ("id", "source", "split", "title", "artist", "album", "description", "year")
_LISTS = ("genres", "parent_genres", "tags", "mood")
_NUMBERS = ("duration", "sample_rate")
MAX_META_BYTES = 1 << 20  # a metadata member is a few hundred bytes; a megabyte is not metadata
MAX_META_DEPTH = 16  # nesting deeper than this is an attack or a bug, and json recursion is not free


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float))


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [
            v
            for x in level
            if isinstance(x, (dict, list))
            for v in (x.values() if isinstance(x, dict) else x)
        ]
        if depth > MAX_META_DEPTH:
            break
    return depth


def check_meta_size(size: int) -> None:
    """ValueError when a .json member of `size` bytes is over the metadata limit. Readers call it with the
    tar header's size before reading the member: a huge member is refused without being held in memory."""
    if size > MAX_META_BYTES:
        raise ValueError(f"metadata member of {size} bytes is over the {MAX_META_BYTES}-byte limit")


def load_meta(raw: bytes) -> dict[str, Any]:
    """Parse a sample's .json member and check it against the metadata contract; ValueError naming the
    first problem (not an object, a field of the wrong type, too large, too deeply nested)."""
    check_meta_size(len(raw))
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"metadata is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"metadata is a JSON {type(meta).__name__}, not an object")
    if _depth(meta) > MAX_META_DEPTH:
        raise ValueError(f"metadata is nested more than {MAX_META_DEPTH} levels deep")
    for name in _SCALAR_OR_LIST:
        value = meta.get(name)
        if not (_scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value))):
            raise ValueError(f"metadata field {name!r} is a {type(value).__name__}, not text")
    for name in _LISTS:
        value = meta.get(name)
        if value is not None and not (isinstance(value, list) and all(_scalar(v) for v in value)):
            raise ValueError(f"metadata field {name!r} is a {type(value).__name__}, not a list of words")
    for name in _NUMBERS:
        value = meta.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"metadata field {name!r} is a {type(value).__name__}, not a number")
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            raise ValueError(f"metadata field 'labels' is a {type(labels).__name__}, not an object")
        for task, value in labels.items():
            if not (
                isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
            ):
                raise ValueError(f"label {task!r} is a {type(value).__name__}, not a class name or list")
    if meta.get("extra") is not None and not isinstance(meta["extra"], dict):
        raise ValueError(f"metadata field 'extra' is a {type(meta['extra']).__name__}, not an object")
    return meta


def _clean(value: Any) -> str:
    """One metadata value as text, or "" when it is missing. Braces are removed (values must not look like
    placeholders), whitespace collapsed, trailing punctuation dropped (the template ends the sentence).
    """
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, float):
        if value != value or value == 0.0:  # NaN from pandas, or an unset year
            return ""
        value = int(value) if value.is_integer() else value
    if isinstance(value, int) and value == 0:
        return ""
    text = " ".join(str(value).replace("{", " ").replace("}", " ").split()).strip(" .;,")
    return "" if text.lower() in _MISSING else text


def join_list(items: Sequence[str]) -> str:
    """Join words naturally: "a", "a and b", "a, b and c"."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _as_list(value: Any) -> list[str]:
    raw = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in raw:
        text = _clean(item)
        if text and text.lower() not in (o.lower() for o in out):
            out.append(text)
    return out


def fields_of(meta: Mapping[str, Any]) -> dict[str, str]:
    """The available template fields of a metadata dict (shard JSON contract), each as final sentence text."""
    labels = meta.get("labels") or {}
    genres = _as_list(meta.get("genres") or [])
    if not genres:  # GTZAN/FMA label tasks carry the genre when the source has no genre list
        genres = _as_list(labels.get("genre") or labels.get("genre_top") or [])
    tags = _as_list(meta.get("tags") or labels.get("tags") or [])
    lower_genres = {g.lower() for g in genres}
    # A parent that equals the genre ("rock, belongs to rock") reads as a mistake: keep only real parents.
    parents = [p for p in _as_list(meta.get("parent_genres") or []) if p.lower() not in lower_genres]
    values: dict[str, Any] = {
        "genre": genres,
        "parent_genre": parents,
        "tags": tags,
        "mood": _as_list(meta.get("mood") or []),
    }
    for name in ("title", "artist", "album", "year", "description"):
        # Scalars by contract, but a source may hand over a list (several artists): join it.
        values[name] = _as_list(meta.get(name))
    out = {}
    for name, value in values.items():
        text = join_list(value) if isinstance(value, list) else value
        if name in _CATEGORY:
            text = text.lower()
        if text:
            out[name] = text
    return out


def _fill(template: Template, fields: Mapping[str, str]) -> str:
    text = template.text.format(**{f: fields[f] for f in template.fields})
    text = " ".join(text.split())
    return text[0].upper() + text[1:] if text else text


def render(
    meta: Mapping[str, Any],
    template: str | Template | None = None,
    rng: random.Random | None = None,
    dropout: float = 0.0,
    templates: Sequence[Template] | None = None,
) -> str:
    """Caption for one track.

    template: use exactly this template (ValueError when the track lacks one of its fields).
    rng given (train mode): drop each available field with probability `dropout` (at least one field is
    kept), then pick uniformly among the templates whose fields all survived.
    rng None (eval mode): the first template of `templates` (default TEMPLATES) whose fields are available.
    """
    fields = fields_of(meta)
    if template is not None:
        tpl = template if isinstance(template, Template) else parse_template(template)
        missing = sorted(tpl.fields - fields.keys())
        if missing:
            raise ValueError(f"template {tpl.text!r} needs {', '.join(missing)}, which this track lacks.")
        return _fill(tpl, fields)
    pool = tuple(templates) if templates else TEMPLATES
    if rng is not None and dropout > 0 and fields:
        kept = {k: v for k, v in fields.items() if rng.random() >= dropout}
        fields = kept or dict([rng.choice(sorted(fields.items()))])
    usable = [t for t in pool if t.fields <= fields.keys()]
    # Field-less templates are the last resort: with any metadata left, a sentence should use it.
    informative = [t for t in usable if t.fields] or usable
    if not informative:
        return FALLBACK_TEMPLATE
    chosen = rng.choice(informative) if rng is not None else informative[0]
    return _fill(chosen, fields)


def normalise(text: str) -> str:
    """The form captions are compared in: lower case, single spaces, no outer whitespace."""
    return " ".join(text.lower().split())


def caption_id(text: str) -> int:
    """Stable 63-bit id of a caption (blake2b of the normalised sentence; equal across processes and runs)."""
    digest = hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


_TASK_FIELD = {"genre": "genre", "genre_top": "genre", "tags": "tags", "mood": "mood", "instrument": "tags"}


def label_prompt(task: str, label: str, template: str | None = None) -> str:
    """Zero-shot sentence for one class label, rendered with the same templates as the training captions.

    The task picks the field the label fills (genre tasks -> {genre}, tag tasks -> {tags}, others -> {genre});
    a custom template may use that field or {label}.
    """
    name = _TASK_FIELD.get(task, "genre" if "genre" in task else "tags" if "tag" in task else "genre")
    if template is not None and "{label}" in template:
        template = template.replace("{label}", "{" + name + "}")
    meta = {"genres": [label]} if name == "genre" else {name: [label]}
    if not fields_of(meta):
        raise ValueError(f"label {label!r} of task {task!r} is empty; class names must be non-empty text.")
    return render(meta, template=template)
