"""Tokenisation: `Tokenize`, the one sentences -> token ids function (model, loader workers, eval and
fine-tuning all call it), and the built-in WordPiece tokenizer trained with `tokenizers` on corpus
sentences (or, with none given, on a built-in music vocabulary)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Words a metadata sentence is made of when no corpus is given: template glue, genres (top-level and
# common sub-genres), tags, moods, instruments and tempo words. Each is a whole token after training.
TEMPLATE_SENTENCES = (
    "A song of {}, belongs to {} music, whose style is {}.",
    "This is a {} track with {} and a {} mood.",
    "A {} piece by an artist, from the album, released in the year.",
    "Music in the genre of {}, tagged {}, that sounds {}.",
    "A recording of {} featuring {}, feeling {}.",
)
GENRES = (
    "blues classical country disco hiphop hip-hop jazz metal pop reggae rock electronic experimental folk "
    "instrumental international spoken soul rnb r&b funk punk indie ambient techno house trance dubstep "
    "drum and bass breakbeat trip-hop lo-fi gospel latin salsa bossa nova samba flamenco world afrobeat "
    "ska dub grunge emo hardcore post-rock shoegaze psychedelic progressive synthpop new wave industrial "
    "opera baroque romantic chamber orchestral soundtrack easy listening lounge old-time historic"
).split()
TAGS = (
    "guitar acoustic electric bass drums piano keyboard synth strings violin cello harp flute sax saxophone "
    "trumpet horns choir vocal vocals male female singer voice no-vocals instrumental beat beats loud quiet "
    "soft slow fast rhythm tempo upbeat dance harpsichord sitar organ percussion orchestra solo duet choral "
    "electronica noise ambient classic modern weird repetitive heavy light clean distorted mellow"
).split()
MOODS = (
    "happy sad calm energetic aggressive relaxing inspiring dark bright melancholic romantic dreamy "
    "epic peaceful angry uplifting nostalgic tense groovy chill joyful sombre hopeful playful"
).split()


@dataclass(frozen=True)
class Tokenize:
    """Sentences -> {"input_ids", "attention_mask"}: (B, L) int64, padded to the longest sentence and
    truncated at max_length. Picklable (a transformers fast tokenizer pickles), so the reader's forkserver
    workers tokenise with exactly the function the model uses."""

    tokenizer: Any  # a transformers tokenizer
    max_length: int

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings (one sentence per example)")
        enc = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def music_vocabulary(words: Iterable[str] = ()) -> list[str]:
    """Sentences covering template words, genres (plus `words`, e.g. a corpus' own label names), tags and
    moods. The vocabulary is fixed here, not read from any corpus, so editing the demo corpus can never
    change the tokenizer of every model built without texts."""
    words = [*GENRES, *(str(w) for w in words)]
    pools = (words, TAGS, MOODS)
    sentences = []
    # Fill each template with cycling words so every word appears in context at least once.
    longest = max(len(p) for p in pools)
    for i, template in itertools.product(range(longest), TEMPLATE_SENTENCES):
        fills = [pool[(i + k) % len(pool)] for k, pool in enumerate(pools)]
        sentences.append(template.format(*fills))
    sentences += [" ".join(words), " ".join(TAGS), " ".join(MOODS), "fast-rhythm slow-rhythm music"]
    return sentences


def wordpiece_vocab(
    corpus: list[str],
    vocab_size: int,
    normalizer: normalizers.Normalizer,
    pre_tokenizer: pre_tokenizers.PreTokenizer,
) -> dict[str, int]:
    """A deterministic WordPiece vocabulary: special tokens, every character seen (as a word start and as a
    `##` continuation, so no word is ever [UNK]), then whole words by frequency (ties alphabetical).

    `tokenizers`' WordPieceTrainer breaks merge ties in hash-map order, so two trainings on the same texts
    give different vocabularies and token ids; a model seeded identically would then differ from step 1.
    """
    words: Counter[str] = Counter()
    for text in corpus:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = list(SPECIAL_TOKENS) + chars + [f"##{c}" for c in chars]
    if len(vocab) > vocab_size:
        raise ValueError(
            f"vocab_size {vocab_size} is below the {len(vocab)} special and character tokens these texts need"
        )
    seen = set(vocab)
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    return {token: i for i, token in enumerate(vocab)}


def train_wordpiece(
    texts: Iterable[str] | None = None, vocab_size: int = 2000, max_length: int = 64
) -> PreTrainedTokenizerFast:
    """A lower-casing BERT-style WordPiece tokenizer built from `texts` (default: music_vocabulary()); the
    same texts always give the same vocabulary and ids.

    Encodes a sentence as [CLS] ... [SEP]; pads with [PAD] (id 0).
    """
    corpus = list(texts) if texts is not None else music_vocabulary()
    if not corpus:
        raise ValueError("tokenizer_texts is empty; give at least one sentence (or None for the built-in)")
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = Tokenizer(
        models.WordPiece(wordpiece_vocab(corpus, vocab_size, normalizer, pre_tokenizer), unk_token="[UNK]")
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )
