"""The built-in procedural music corpus: six learnable styles rendered with numpy, written in the real
on-disk layouts of GTZAN, FMA, MagnaTagATune and a tagged folder (used by tests, benchmarks and the demo).

Styles differ the way genres do (tempo, meter and swing, drum pattern, waveform and envelope, harmony),
and every clip draws its own key, tempo jitter, progression, instrument mix, filter and noise, so a model
has to learn the style rather than memorise a clip. `difficulty` (make_corpus, render_clip) lets styles
borrow each other's tempo, drums, room and timbres, so timbre statistics alone no longer separate them.

`styles` holds the style definitions and metadata vocabularies, `render` the audio, `writer` the clips of a
corpus and how they reach disk (planted faults included), `layouts` the four dataset layouts.
"""

from muser.synth.layouts import LAYOUTS, make_corpus
from muser.synth.render import render_clip
from muser.synth.styles import FILLER_TAGS, STYLE_INFO, STYLES, StyleInfo, clip_meta

__all__ = [
    "FILLER_TAGS",
    "LAYOUTS",
    "STYLES",
    "STYLE_INFO",
    "StyleInfo",
    "clip_meta",
    "make_corpus",
    "render_clip",
]
