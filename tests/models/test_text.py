"""The text tower: the built-in WordPiece tokenizer and small BERT, freezing, pooling, the real MiniLM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerFast

from muser.models.text import TextEncoder
from muser.models.tokenizer import SPECIAL_TOKENS, music_vocabulary, train_wordpiece


def test_tokenizer_trained_on_given_texts():
    texts = ["a zydeco song with an accordion", "zydeco and cajun music", "an accordion solo"] * 3
    tok = train_wordpiece(texts, vocab_size=200)
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.tokenize("Zydeco accordion") == ["zydeco", "accordion"]  # whole words, lower-cased
    # convert_tokens_to_ids never returns None (an unknown token maps to [UNK]'s id), so check that each
    # special token has its own id which maps back to it.
    ids = [tok.convert_tokens_to_ids(special) for special in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS)
    assert tok.convert_ids_to_tokens(ids) == list(SPECIAL_TOKENS)
    assert tok.pad_token_id == 0
    enc = tok(["zydeco", "cajun accordion song"], padding="longest", return_tensors="pt")
    ids = enc["input_ids"]
    assert ids[0, 0] == tok.cls_token_id and ids[0, 2] == tok.sep_token_id and ids[0, -1] == tok.pad_token_id
    assert enc["attention_mask"].sum(dim=1).tolist() == [3, 5]


def test_tokenizer_is_deterministic():
    # tokenizers' own WordPiece trainer breaks ties in hash-map order; ours must not, or two runs with one
    # seed would embed the same caption differently from step 1.
    texts = ["a chiptune song with a keyboard", "trance and chiptune music", "a keyboard style"] * 2
    first, second = train_wordpiece(texts, vocab_size=50), train_wordpiece(texts, vocab_size=50)
    assert first.get_vocab() == second.get_vocab()
    assert len(first.get_vocab()) == 50  # the most frequent whole words fill the budget after the characters
    assert first.tokenize("brick") == ["b", "##r", "##i", "##c", "##k"]  # unseen word, seen letters
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(texts, vocab_size=10)


def test_builtin_vocabulary_knows_music_words():
    tok = train_wordpiece(None, vocab_size=2000)
    assert len(music_vocabulary()) > 50
    for word in ("jazz", "reggae", "guitar", "melancholic", "belongs", "style"):
        assert tok.tokenize(word) == [word]
    with pytest.raises(ValueError, match="tokenizer_texts"):
        train_wordpiece([], vocab_size=100)


def test_builtin_encoder_pools_over_mask():
    enc = TextEncoder.build(["rock pop jazz music song"], hidden=32, layers=1, heads=2, max_length=16).eval()
    assert enc.out_dim == 32 and enc.source is None
    batch = enc.tokenize(["rock song", "jazz music song pop rock"])
    out = enc(**batch)
    assert out.shape == (2, 32)
    # Padding does not leak into the mean: the short sentence alone gives the same vector.
    alone = enc(**enc.tokenize(["rock song"]))
    assert torch.allclose(out[0], alone[0], atol=1e-5)
    long = enc.tokenize(["rock " * 40])
    assert long["input_ids"].shape[1] == 16  # truncated at max_length


def test_freezing_and_cls_pooling():
    enc = TextEncoder.build(None, hidden=32, layers=3, heads=2, pooling="cls", freeze_layers=2)
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert any(n.startswith("backbone.embeddings") for n in frozen)
    assert any(".layer.1." in n for n in frozen) and not any(".layer.2." in n for n in frozen)
    enc.eval()
    batch = enc.tokenize(["rock song"])
    hidden = enc.backbone(**batch).last_hidden_state
    assert torch.equal(enc(**batch), hidden[:, 0])
    with pytest.raises(ValueError, match="text_freeze_layers"):
        TextEncoder.build(None, hidden=32, layers=2, heads=2, freeze_layers=3)
    with pytest.raises(ValueError, match="text_pooling"):
        TextEncoder.build(None, hidden=32, layers=1, heads=2, pooling="max")


def test_missing_encoder_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="text encoder"):
        TextEncoder.from_pretrained(str(tmp_path))


def test_minilm_loads_offline_and_embeds(minilm_dir):
    enc = TextEncoder.from_pretrained(str(minilm_dir)).eval()
    assert enc.out_dim == 384 and enc.source == str(minilm_dir)
    sentences = [
        "A cheerful pop song with upbeat drums.",
        "An upbeat, happy pop track with lively percussion.",
        "The quarterly tax report is due on Tuesday.",
    ]
    with torch.no_grad():
        e = F.normalize(enc(**enc.tokenize(sentences)), dim=-1)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3
