"""Rows inside a long word: the run of characters without whitespace that ends a sample's text.

Token soup (``evaluation/degeneracy.py``) is a long run of characters without whitespace
("...rakkustrakkuttis..."). Inside a run that long there is no idea left to choose, only
word pieces, and a tilt there mostly holds the sample away from the tokens that would close
the run, the ones the distiller has seen most. With ``--esamp-tilt-max-run K`` a row whose
text ends in K or more characters without whitespace is left untilted at the step: its next
token comes from plain sampling's distribution, as at T = 1, until a token with whitespace
ends the run. A long run still starts as often as the tilt makes it; it no longer gets help
to go on.

The run is counted in characters of each token's own decoded text (a byte-fallback piece
counts as one), from a per-vocabulary table built once from the tokenizer, and kept per
request on the host (``RequestState.run``), extended by the tokens SGLang appended to the
request's output since the last step. A request's run starts from its prompt's last
characters. Every TP rank sees the same tokens, so every rank decides the same.

Usage::

    words = WordRuns.from_tokenizer(tokenizer, vocab)
    rows = words.long_rows(step.states, step.reqs, cfg.tilt_max_run)   # set of batch rows
"""

from __future__ import annotations


class WordRuns:
    def __init__(self, pieces: list[str]):
        """``pieces[i]``: the decoded text of token id i."""
        self.tail = []  # per id: its characters after its last whitespace (all of them if it has none)
        self.breaks = []  # per id: it holds whitespace, so it ends the run before its tail
        for text in pieces:
            cut = max((i for i, ch in enumerate(text) if ch.isspace()), default=-1)
            self.tail.append(len(text) - cut - 1)
            self.breaks.append(cut >= 0)

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab: int) -> WordRuns:
        """The table for the first ``vocab`` ids (ids the tokenizer lacks count as whitespace)."""
        known = min(vocab, len(tokenizer))
        pieces = tokenizer.batch_decode([[i] for i in range(known)])
        return cls(pieces + [" "] * (vocab - known))

    def extend(self, run: int, ids) -> int:
        """The run after ``ids`` follow a text that ended in ``run`` such characters."""
        for t in ids:
            run = self.tail[t] if self.breaks[t] else run + self.tail[t]
        return run

    def trailing(self, ids, limit: int) -> int:
        """The run at the end of ``ids`` (a prompt), counted back until whitespace or ``limit``."""
        run = 0
        for t in reversed(ids):
            run += self.tail[t]
            if self.breaks[t] or run >= limit:
                break
        return run

    def long_rows(self, states: list, reqs: list, limit: int) -> set[int]:
        """Batch rows with a live slot whose text ends in ``limit`` or more characters without
        whitespace; brings each such request's run up to its output so far."""
        rows = set()
        for row, (state, req) in enumerate(zip(states, reqs)):
            if state is None or state.live_slot < 0:
                continue
            out = req.output_ids
            if state.run_seen < 0:  # its first step: the run its prompt ends in
                state.run, state.run_seen = self.trailing(getattr(req, "origin_input_ids", None) or (), limit), 0
            if state.run_seen < len(out):
                state.run, state.run_seen = self.extend(state.run, out[state.run_seen:]), len(out)
            if state.run >= limit:
                rows.add(row)
        return rows
