"""Reading a model's reply as a decision: which option it chose, yes or no.

The assistant's recognition (``rap recognize``) and the benchmarks
(``rap eval``) read replies the same way, with this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

_NON_WORD = re.compile(r"[\W_]+")
# The reply is only a letter: "B", "(b)", "B.", "**B**".
_BARE_LETTER = re.compile(r"[\s(\[*]*([A-Za-z])[\s)\].:*]*")
# "The answer is B", "Answer: (B)", "option B"; a capital, so "the answer is a dog" is not option A.
_ANSWER_IS = re.compile(r"\b(?i:answer|option|choice)\b(?:\s+is)?\s*:?\s*[(\[]?([A-Z])\b")
# Letters marked as letters: opening a line ("B. Yes", "B) ...", "B: ..."; not "A dog"), or "(B)" anywhere.
_MARKED = re.compile(r"^\s*[(\[]?([A-Za-z])(?:[)\]]|[.:](?!\w))|[(\[]([A-Za-z])[)\]]", re.MULTILINE)


def _words(text: str) -> str:
    """``text`` case-folded, punctuation dropped, one space between words."""
    return " ".join(_NON_WORD.sub(" ", text.casefold()).split())


def _letter_cues(reply: str) -> Iterator[list[str]]:
    """Letters the reply marks as its choice, strongest cue first."""
    if bare := _BARE_LETTER.fullmatch(reply):
        yield [bare.group(1)]
    if answer := _ANSWER_IS.search(reply):
        yield [answer.group(1)]
    yield [opening or inside for opening, inside in _MARKED.findall(reply)]


def _by_option_text(reply: str, options: Mapping[str, str]) -> str | None:
    said = f" {_words(reply)} "
    texts = {letter: f" {_words(text)} " for letter, text in options.items() if _words(text)}
    exact = [letter for letter, text in texts.items() if text == said]
    if exact:
        return exact[0] if len(exact) == 1 else None
    found = {letter: text for letter, text in texts.items() if text in said}
    kept = [letter for letter, text in found.items() if not any(text != other and text in other for other in found.values())]
    return kept[0] if len(kept) == 1 else None


def parse_choice(reply: str, options: Mapping[str, str]) -> str | None:
    """The option letter a model's ``reply`` chose, as keyed in ``options``; None if unclear.

    Cues are tried strongest first, and the first that names an option decides:
    the reply is only a letter (``B``, ``(b)``, ``B.``); it says ``answer is B``
    or ``option B`` (a capital only, so "the answer is a dog" is not A); it
    marks letters as letters, opening a line (``B. Yes``, ``B) ...``; a bare
    ``A`` then a space is an article) or in parentheses anywhere (``(B)``). A
    cue naming two options gives None, so a reply that echoes every option is
    undecided. Failing all that, the reply is matched against the options'
    texts as whole words, case and punctuation ignored: an exact match wins,
    else exactly one option's text must appear, where an option whose text
    lies inside another found option's text does not count (so "Yes,
    definitely" picks that option over "Yes").
    """
    letters = {k.casefold(): k for k in options}
    for cue in _letter_cues(reply):
        chosen = {letters[c.casefold()] for c in cue if c.casefold() in letters}
        if chosen:
            return chosen.pop() if len(chosen) == 1 else None
    return _by_option_text(reply, options)


def parse_yes_no(reply: str) -> bool | None:
    """A model's yes/no ``reply`` as a bool: its first word if that is yes or no
    ("No, I see <bo>'s toy, yes" is no), else whichever of the two it contains;
    None when it says neither, or both after some other opening."""
    words = _words(reply).split()
    if words and words[0] in ("yes", "no"):
        return words[0] == "yes"
    said = {w for w in words if w in ("yes", "no")}
    return said.pop() == "yes" if len(said) == 1 else None


# Four numbers in brackets, as the grounding answers are written: "[0.12, 0.30, 0.85, 0.99]".
_BOX = re.compile(r"[\[(]\s*" + r"\s*,\s*".join([r"(\d+(?:\.\d+)?|\.\d+)"] * 4) + r"\s*[\])]")


def parse_box(reply: str, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The box a model's grounding ``reply`` gives, in pixels of an image of ``size``; None if it gives none.

    The paper trains RAP-LLaVA to answer ``[x0, y0, x1, y1]`` as shares of the
    image's width and height (LLaVA's RefCOCO convention, see
    :mod:`rap.data.tasks`); a reply whose numbers exceed 1 is read as pixels.
    The first such box counts; it is clipped to the image, and one with no
    area gives None.
    """
    found = _BOX.search(reply)
    if found is None:
        return None
    values = [float(v) for v in found.groups()]
    w, h = size
    scale = (w, h, w, h) if max(values) <= 1.0 else (1, 1, 1, 1)
    x0, y0, x1, y1 = (round(min(max(v * s, 0), limit)) for v, s, limit in zip(values, scale, (w, h, w, h)))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
