"""Keep the message catalogues in step with the templates (a developer tool):

    python -m siyu.web.catalog

extracts every ``_()`` of the templates and every ``gettext(request, …)`` of the pages'
Python code, and updates each ``locales/<locale>/LC_MESSAGES/messages.po``: new messages
are added untranslated, translations kept, messages no longer used dropped. Then
translate the empty ``msgstr`` entries. No compile step: the app compiles ``.po`` files
in memory when it loads them.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from siyu.web.i18n import LOCALES

HERE = Path(__file__).resolve().parent
METHODS = [
    ("templates/**.html", "jinja2"),
    ("*.py", "python"),
]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true"}}


def template_catalog() -> Catalog:
    catalog = Catalog(project="siyu", charset="utf-8")
    for filename, lineno, message, comments, _context in extract_from_dir(
        str(HERE), METHODS, keywords={"_": None, "gettext": (2,), "N_": None}, options_map=OPTIONS
    ):
        if isinstance(message, tuple):
            message = message[0]
        if message:
            catalog.add(message, locations=[(filename, lineno)], auto_comments=comments)
    return catalog


def update() -> dict[str, int]:
    """Update every locale's catalogue; returns how many messages each lacks a translation."""
    template = template_catalog()
    missing = {}
    for locale in LOCALES:
        path = HERE / "locales" / locale / "LC_MESSAGES" / "messages.po"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open("rb") as fp:
                catalog = read_po(fp, locale=locale)
        else:
            catalog = Catalog(locale=locale, project="siyu", charset="utf-8")
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        with path.open("wb") as fp:
            write_po(fp, catalog, width=100, omit_header=False, sort_output=False)
        missing[locale] = sum(1 for m in catalog if m.id and not m.string)
    return missing


if __name__ == "__main__":  # pragma: no cover - developer tool
    for locale, count in update().items():
        print(f"{locale}: {count} messages without a translation")
