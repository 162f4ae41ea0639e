"""The word-break table (runtime/breaks.py) on the embedded model's tokenizer, against the
byte-level BPE spelling of its tokens: a token ends a word where its raw form holds a space
(Ġ), a newline (Ċ), a tab (ĉ), another control whitespace (ċ, Č, č, Ĝ, Ğ, ğ) or a no-break
space (Âł): what the degenerate-sample detector's runs (regex \\S) stop at."""

from types import SimpleNamespace

from sglang_esamp.runtime.breaks import table, word_breaks


def test_a_token_breaks_a_word_where_it_holds_whitespace(embedded_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(embedded_model))
    args = SimpleNamespace(skip_tokenizer_init=False, tokenizer_path=None, model_path=str(embedded_model),
                           tokenizer_mode="auto", trust_remote_code=False, revision=None)
    vocab = len(tok) + 3  # a padded head: the ids beyond the tokenizer count as breaks
    got = word_breaks(args, vocab, "cpu")
    raw = tok.convert_ids_to_tokens(list(range(len(tok))))
    want = [any(mark in piece for mark in "ĠĊĉċČčĜĞğ") or "Âł" in piece for piece in raw]
    assert got.tolist() == want + [True] * 3
    assert 0.3 < sum(want) / len(want) < 0.9  # both kinds are common
    assert table(["a b", "ab", "\n", ""], "cpu").tolist() == [True, False, True, False]


def test_no_tokenizer_no_table():
    assert word_breaks(SimpleNamespace(skip_tokenizer_init=True), 10, "cpu") is None
