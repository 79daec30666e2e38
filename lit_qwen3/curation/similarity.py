"""Near-duplicate search against validation items: exact n-gram containment, inverted index.

The measure is the share of a validation item's term n-grams found in a candidate text
(|G(val) ∩ G(candidate)| / |G(val)|), the overlap measure of benchmark contamination checks:
a candidate that embeds or lightly rewords a validation question contains nearly all of its
n-grams, whatever else it adds. Terms are lowercased words and punctuation
(:func:`~lit_qwen3.curation.text.terms`), so ``347+589`` and ``Compute 347 + 589.`` share
their n-grams, and ``1347+5890`` shares none with ``347+589``.

Why the query and not the response: a contaminated sample repeats the validation *question*;
two correct solutions of the same problem by different authors share few n-grams.

Why exact and not MinHash: an inverted index (n-gram -> items) scores only the validation items
that share an n-gram with the candidate, exactly, in well under a second for thousands of
candidates against thousands of items; MinHash LSH (e.g. ``datasketch``) pays off at millions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from lit_qwen3.curation.text import ngrams, terms


@dataclass(frozen=True)
class Match:
    """The validation item a candidate overlaps most, and by how much."""

    key: str
    containment: float


class NgramIndex:
    """Validation items indexed by their term ``n``-grams (an item shorter than ``n`` terms is
    one gram of all its terms, matched by grams of that length in the candidate)."""

    def __init__(self, items: Iterable[tuple[str, str]], n: int = 3) -> None:
        """``items``: (key, text) pairs, e.g. (validation id, question)."""
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        self.n = n
        self.keys: list[str] = []
        self.sizes: list[int] = []
        self.postings: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self.lengths: set[int] = set()  # gram lengths indexed: n, and shorter whole items
        for key, text in items:
            grams = set(ngrams(terms(text), n))
            if not grams:
                continue
            item = len(self.keys)
            self.keys.append(str(key))
            self.sizes.append(len(grams))
            self.lengths.update(len(gram) for gram in grams)
            for gram in grams:
                self.postings[gram].append(item)

    def __len__(self) -> int:
        return len(self.keys)

    def best_match(self, text: str) -> Match | None:
        """The item with the highest containment in ``text`` (ties: the first indexed), or
        None when no item shares an n-gram with it."""
        hits: Counter[int] = Counter()
        tokens = terms(text)
        for length in self.lengths:
            for gram in set(ngrams(tokens, length)):
                if len(gram) == length:
                    hits.update(self.postings.get(gram, ()))
        if not hits:
            return None
        best = max(hits, key=lambda item: (hits[item] / self.sizes[item], -item))
        return Match(self.keys[best], hits[best] / self.sizes[best])
