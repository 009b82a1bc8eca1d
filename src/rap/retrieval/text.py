"""Finding concept names in a user's text.

A concept named in the question (``<bo>`` or ``bo`` as a whole word, in any
case) is always retrieved, which is what makes text-only questions work. The
text is split into candidate words once and each is looked up, so the cost
does not grow with the number of stored concepts.
"""

from __future__ import annotations

import re

# Words as concept names are written (letters/digits with inner _ - .), or anything in <...>.
_CANDIDATE = re.compile(r"<([^<>\s]{1,64})>|([^\W_](?:[\w.\-]*[^\W_])?)")


def candidate_names(text: str) -> list[str]:
    """Every word of ``text`` that could be a concept name, in order, without repeats.

    Words end on a letter or digit, so ``bo.`` at the end of a sentence and
    ``bo's`` find ``bo``; ``bob``, ``bo_2`` and ``bo-peep`` do not.
    """
    return list(dict.fromkeys(m.group(1) or m.group(2) for m in _CANDIDATE.finditer(text)))
