"""A message in the two languages siyu ships: Chinese (the operators' language) and English.

Text built from data at run time (a diagnosis finding's evidence, a simulation's notes)
cannot go through the console's gettext catalogues, whose messages are fixed strings. So
it is written in both languages where it is made and carried as a ``Text``; each edge
picks: the console shows ``zh`` or ``en`` by the page's language, the API answers both as
``{"zh": …, "en": …}``, the CLI prints the Chinese with the English beneath it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Text:
    """One message, in Chinese (``zh``) and in English (``en``)."""

    zh: str
    en: str
