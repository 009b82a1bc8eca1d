"""Names for training concepts.

The model must learn to read a name from the prompt, not to remember one, so
names are meaningless: pronounceable nonsense like ``<kima>`` (the paper's
``<bo>`` style), or numbered identifiers ``<sks1>``, ``<sks2>``. Both are seeded,
so a rebuild gives every concept the same name and the annotator cache hits.
"""

from __future__ import annotations

import random
from typing import Literal

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


def concept_tokens(count: int, style: Literal["random", "sks"], seed: int) -> list[str]:
    """``count`` distinct names in ``<...>``."""
    if style == "sks":
        return [f"<sks{n}>" for n in range(1, count + 1)]
    rng = random.Random(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        syllables = 2 + len(seen) // 2000  # grow names before collisions make the loop slow
        name = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.randint(syllables - 1, syllables)))
        if name not in seen:
            seen.add(name)
            names.append(f"<{name}>")
    return names
