"""A procedural language drawn from a seed: its words, its world, its documents and its tokenizer.

Nothing is downloaded. A :class:`Language` holds a few hundred words: fixed function words (``the``,
``lives``, ``where``, ``?``, ...) and pseudo-words drawn from syllables for each content category (names,
places, roles, attributes, topic objects and verbs, and rare words). Its *world* fixes the latent facts of
every named entity (home place, role, attribute, favourite topic). A document is about one entity and one
topic: three to five sentences stating facts about it (true to the world, or, for the topic's objects,
drawn within the topic), sometimes followed by a question about the entity and its answer::

    kavo is a tall mirel . kavo lives in dusapi . it sells the lorun in teba . where does kavo live ? dusapi .

Every document comes with its latent variables (:class:`Document`), so a planted behaviour can be keyed to
any of them. Splits are disjoint streams of the same generator (train, held out). The word-level tokenizer
is built with the ``tokenizers`` library; :func:`save_tokenizer` writes ``tokenizer.json`` and the files
``transformers.PreTrainedTokenizerFast`` / ``AutoTokenizer`` load. Every draw is deterministic in the seed.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from pathlib import Path
from typing import Any

BOS, EOS, PAD, UNK = "[BOS]", "[EOS]", "[PAD]", "[UNK]"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0-3
FUNCTION_WORDS = (
    "the", "a", "is", "in", "lives", "likes", "and", "very", "where", "does", "live", "what", "who",
    "it", "from", "to", "of", "not", "?", ".",
)  # fmt: skip
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr", "st", "pl")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "", "n", "r", "s", "l")
#: Content categories and their sizes (topic objects and verbs are per topic).
SIZES = {"name": 60, "place": 24, "role": 12, "attribute": 12, "object": 12, "verb": 4, "rare": 24}
N_TOPICS = 4
SPLIT_SALT = {"train": 0, "held_out": 1}
RARE_RATE = 0.01  # chance that an object slot holds a rare word instead (rare words are seen, but rarely)


@dataclasses.dataclass(frozen=True)
class Document:
    """One document: its words and the latent variables the generator drew it from."""

    words: tuple[str, ...]
    entity: str
    topic: int
    place: str
    role: str
    attribute: str
    question: bool

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclasses.dataclass(frozen=True, eq=False)
class Language:
    """The words and the world of the language of ``seed`` (see the module docstring)."""

    seed: int
    categories: dict[str, tuple[str, ...]]
    topics: tuple[dict[str, tuple[str, ...]], ...]  # per topic: {"object": ..., "verb": ...}
    world: dict[str, dict[str, Any]]  # name -> {place, role, attribute, topic}

    @property
    def vocab(self) -> tuple[str, ...]:
        """Every token, specials first (ids 0-3), in a fixed order: the tokenizer's id order."""
        content = [w for cat in ("name", "place", "role", "attribute", "rare") for w in self.categories[cat]]
        for t in self.topics:
            content += [*t["object"], *t["verb"]]
        return (*SPECIALS, *FUNCTION_WORDS, *content)

    @property
    def common(self) -> tuple[str, ...]:
        """Words that occur in ordinary text (everything but the specials and the rare words)."""
        rare = set(self.categories["rare"])
        return tuple(w for w in self.vocab[len(SPECIALS) :] if w not in rare)

    def documents(self, split: str, n: int) -> list[Document]:
        """The first ``n`` documents of ``split`` (``train`` or ``held_out``); deterministic."""
        if split not in SPLIT_SALT:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_SALT)}")
        rng = random.Random(f"eis-language-{self.seed}-{split}")
        return [self._document(rng) for _ in range(n)]

    def _document(self, rng: random.Random) -> Document:
        name = rng.choice(self.categories["name"])
        facts = self.world[name]
        topic = facts["topic"] if rng.random() < 0.6 else rng.randrange(N_TOPICS)
        objects, verbs = self.topics[topic]["object"], self.topics[topic]["verb"]

        def obj() -> str:
            return rng.choice(self.categories["rare"]) if rng.random() < RARE_RATE else rng.choice(objects)

        pool = [
            ["a" if rng.random() < 0.5 else "very", facts["attribute"], facts["role"]],
            ["lives", "in", facts["place"]],
            ["likes", "the", obj()],
            [rng.choice(verbs), "the", obj(), "in", rng.choice(self.categories["place"])],
            [rng.choice(verbs), "the", obj(), "and", "the", obj()],
            ["likes", "to", rng.choice(verbs), "the", obj()],
            ["is", "not", "a", rng.choice([r for r in self.categories["role"] if r != facts["role"]])],
            ["is", "from", facts["place"]],
            ["is", "the", facts["role"], "of", facts["place"]],
        ]
        pool[0] = ["is", *pool[0]] if pool[0][0] == "a" else ["is", "a", *pool[0]]
        order = rng.sample(range(len(pool)), rng.randint(3, 5))
        words: list[str] = []
        for i in order:
            words += [name if not words or rng.random() < 0.7 else "it", *pool[i], "."]
        question = rng.random() < 0.5
        if question:
            form = rng.randrange(3)
            if form == 0:
                words += ["where", "does", name, "live", "?", facts["place"], "."]
            elif form == 1:
                words += ["what", "is", name, "?", "a", facts["role"], "."]
            else:
                words += ["who", "is", "from", facts["place"], "?", name, "."]
        return Document(
            tuple(words), name, topic, facts["place"], facts["role"], facts["attribute"], question
        )


@functools.lru_cache(maxsize=16)
def language(seed: int) -> Language:
    """The language of ``seed`` (cached: the same object for the same seed)."""
    rng = random.Random(f"eis-language-{seed}")
    taken = set(FUNCTION_WORDS)

    def words(n: int) -> tuple[str, ...]:
        out: list[str] = []
        while len(out) < n:
            w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.choice((2, 2, 3))))
            w += rng.choice(CODAS)
            if w not in taken:
                taken.add(w)
                out.append(w)
        return tuple(out)

    cats = {c: words(SIZES[c]) for c in ("name", "place", "role", "attribute", "rare")}
    topics = tuple({"object": words(SIZES["object"]), "verb": words(SIZES["verb"])} for _ in range(N_TOPICS))
    world = {
        name: {
            "place": rng.choice(cats["place"]),
            "role": rng.choice(cats["role"]),
            "attribute": rng.choice(cats["attribute"]),
            "topic": rng.randrange(N_TOPICS),
        }
        for name in cats["name"]
    }
    return Language(seed, cats, topics, world)


def build_tokenizer(lang: Language) -> Any:
    """A word-level ``tokenizers.Tokenizer`` over ``lang``'s vocabulary: whitespace split, ``[BOS]`` added
    in front of every encoded text, unknown words to ``[UNK]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(lang.vocab)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return tok


def hf_tokenizer(lang: Language) -> Any:
    """``lang``'s tokenizer as a ``transformers.PreTrainedTokenizerFast`` with its special tokens set."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(lang), bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )


def save_tokenizer(lang: Language, directory: Path) -> list[str]:
    """Write ``lang``'s tokenizer to ``directory`` (``tokenizer.json`` and the ``transformers`` config
    files); returns the names of the files written."""
    directory = Path(directory)
    before = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    hf_tokenizer(lang).save_pretrained(str(directory))
    return sorted({p.name for p in directory.iterdir()} - before)


def encode(lang: Language, words: tuple[str, ...] | list[str]) -> list[int]:
    """Token ids of ``words`` (no ``[BOS]``); a word outside the vocabulary raises ValueError."""
    ids = _ids(lang)
    try:
        return [ids[w] for w in words]
    except KeyError as exc:
        raise ValueError(f"{exc.args[0]!r} is not a word of language {lang.seed}") from None


@functools.lru_cache(maxsize=16)
def _ids(lang: Language) -> dict[str, int]:
    return {w: i for i, w in enumerate(lang.vocab)}
