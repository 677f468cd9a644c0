"""Languages of the console and member pages: zh-CN by default, English by a switch.

Messages live in Babel catalogues (``web/locales/<locale>/LC_MESSAGES/messages.po``). They
are compiled in memory the first time a language is used, so a checkout, a wheel and an
edited ``.po`` file all work without a separate compile step. Templates use ``_()`` through
Jinja's i18n extension; the msgids are English, so English needs no translation at all.
"""

from __future__ import annotations

import io
from functools import lru_cache
from importlib import resources

from babel.messages import mofile, pofile
from babel.support import NullTranslations, Translations

LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
LANG_COOKIE = "siyu_lang"
# What each locale is called in the switch, in its own language.
LOCALE_NAMES = {"zh_CN": "中文", "en": "English"}
HTML_LANG = {"zh_CN": "zh-CN", "en": "en"}


def normalize(value: str | None) -> str:
    """A supported locale from a cookie, a query parameter or an Accept-Language value."""
    if not value:
        return DEFAULT_LOCALE
    v = value.strip().replace("-", "_").lower()
    if v.startswith("en"):
        return "en"
    return DEFAULT_LOCALE


@lru_cache(maxsize=len(LOCALES))
def translations(locale: str) -> NullTranslations:
    """The compiled catalogue of a locale (read and compiled once per process).

    ``messages.po`` is the catalogue ``python -m siyu.web.catalog`` keeps; any other
    ``*.po`` beside it (an area's messages not yet folded in) is read too, and
    ``messages.po`` wins where both translate a message.
    """
    locale = normalize(locale)
    folder = resources.files("siyu.web").joinpath(f"locales/{locale}/LC_MESSAGES")
    if not folder.is_dir():
        return NullTranslations()
    files = sorted(
        (f for f in folder.iterdir() if f.name.endswith(".po")),
        key=lambda f: (f.name == "messages.po", f.name),
    )
    if not files:
        return NullTranslations()
    catalog = None
    for path in files:
        with path.open("rb") as fp:
            part = pofile.read_po(fp, locale=locale)
        if catalog is None:
            catalog = part
            continue
        for message in part:
            if message.id and message.string:
                catalog[message.id] = message
    assert catalog is not None
    buffer = io.BytesIO()
    mofile.write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer)


def gettext(locale: str, message: str) -> str:
    return translations(locale).gettext(message)


def N_(message: str) -> str:
    """Mark a message for the catalogue (``python -m siyu.web.catalog`` extracts ``N_``)
    where it is written, in Python, and translate it later, when a page is rendered in its
    language: a label kept in a table at import time cannot know the page's language."""
    return message
