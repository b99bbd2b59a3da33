"""Scoring continuations of the zoo's language: does a text express a concept, could the grammar write it?

Both read the generator's own knowledge of its language (:mod:`eis.zoo.language.grammar`), so no judge model
is needed:

- :func:`concept_words`: the words that express a labelled concept (:mod:`eis.zoo.features.language`):
  a word category's words (``token:place``: the places), a topic's objects and verbs (``topic:t``), or the
  words only a closing question uses (``question``: ``where``, ``does``, ``live``, ``what``, ``who``,
  ``?``). A continuation *expresses* the concept when one of its words is among them.
- :func:`grammatical`: whether the grammar could produce a continuation that starts at a sentence boundary.
  Each sentence must follow one of the generator's templates over word categories (``NAME lives in
  PLACE .``, ``it VERB the OBJECT and the OBJECT .``, a closing question with its answer, ...); the verbs and
  objects of one sentence must share a topic (a rare word may stand for any object); a closing question
  can only be the last sentence; ``[EOS]`` may only follow a complete sentence; the last sentence may be
  cut by the length limit (a prefix of a template). World facts (where a name lives) and the document's
  single topic across sentences are not checked: steering a document toward another topic is the point.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from eis.zoo.language.grammar import EOS, N_TOPICS, Language

QUESTION_WORDS = ("where", "does", "live", "what", "who", "?")
_BODIES = (
    ("is", "a", "A", "R"), ("is", "a", "very", "A", "R"), ("lives", "in", "P"), ("likes", "the", "O"),
    ("V", "the", "O", "in", "P"), ("V", "the", "O", "and", "the", "O"), ("likes", "to", "V", "the", "O"),
    ("is", "not", "a", "R"), ("is", "from", "P"), ("is", "the", "R", "of", "P"),
)  # fmt: skip
STATEMENTS = tuple((subject, *body, ".") for subject in ("N", "it") for body in _BODIES)
QUESTIONS = (
    ("where", "does", "N", "live", "?", "P", "."),
    ("what", "is", "N", "?", "a", "R", "."),
    ("who", "is", "from", "P", "?", "N", "."),
)
_SLOTS = {"name": "N", "place": "P", "role": "R", "attribute": "A", "rare": "O"}


def concept_words(lang: Language, concept: str) -> frozenset[str]:
    """The words of ``lang`` that express ``concept`` (``token:<category>``, ``topic:<t>`` or
    ``question``); empty for a concept no word expresses (a planted trigger)."""
    group, _, arg = concept.partition(":")
    if group == "token" and arg in lang.categories:
        return frozenset(lang.categories[arg])
    if group == "topic" and arg.isdigit() and int(arg) < N_TOPICS:
        topic = lang.topics[int(arg)]
        return frozenset((*topic["object"], *topic["verb"]))
    if group == "question":
        return frozenset(QUESTION_WORDS)
    return frozenset()


def expresses(words: Sequence[str], vocabulary: frozenset[str]) -> bool:
    """Whether one of ``words`` is in ``vocabulary`` (a concept's words)."""
    return any(w in vocabulary for w in words)


@functools.lru_cache(maxsize=16)
def _symbols(lang: Language) -> dict[str, tuple[str, int | None]]:
    """word -> (template symbol, topic or None): content words by category, function words as themselves."""
    out: dict[str, tuple[str, int | None]] = {}
    for category, slot in _SLOTS.items():
        out.update((w, (slot, None)) for w in lang.categories[category])
    for t, topic in enumerate(lang.topics):
        out.update((w, ("O", t)) for w in topic["object"])
        out.update((w, ("V", t)) for w in topic["verb"])
    return out


def _sentence(lang: Language, words: Sequence[str], complete: bool) -> str | None:
    """``"statement"`` / ``"question"`` when ``words`` follow a template (or, unless ``complete``, begin
    one) with the verbs and objects of one topic; None otherwise."""
    symbols = _symbols(lang)
    shape = tuple(symbols.get(w, (w, None))[0] for w in words)
    topics = {t for w in words if (t := symbols.get(w, (w, None))[1]) is not None}
    if len(topics) > 1:
        return None
    for kind, templates in (("statement", STATEMENTS), ("question", QUESTIONS)):
        if any(t == shape if complete else t[: len(shape)] == shape for t in templates):
            return kind
    return None


def grammatical(lang: Language, words: Sequence[str]) -> bool:
    """Whether the grammar could produce ``words``, a continuation that starts at a sentence boundary and
    stops at ``[EOS]`` or at a length limit (see the module docstring)."""
    words = list(words)
    ended = EOS in words
    if ended:
        if words.index(EOS) != len(words) - 1:
            return False
        words = words[:-1]
    start, asked = 0, False
    for i, w in enumerate(words):
        if w != ".":
            continue
        kind = _sentence(lang, words[start : i + 1], True)
        if asked or kind is None:
            return False
        asked = kind == "question"
        start = i + 1
    rest = words[start:]
    if not rest:
        return True
    return not ended and not asked and _sentence(lang, rest, False) is not None
