"""Rendering: one Jinja environment per language, the filters templates share, and the
HTML error page. Templates never hard-code text: every string goes through ``_()``."""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from siyu.core import clock
from siyu.core.settings import get_settings
from siyu.members.rules import mask_phone, member_no
from siyu.web import i18n, rules


def locale_of(request: Request) -> str:
    """The language: ``?lang=`` (a shared link), the switch's cookie, else zh-CN."""
    return i18n.normalize(request.query_params.get("lang") or request.cookies.get(i18n.LANG_COOKIE))


def _tz() -> ZoneInfo:
    return ZoneInfo(get_settings().timezone)


def local_dt(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An instant in the brand's timezone."""
    if value is None:
        return ""
    return clock.as_utc(value).astimezone(_tz()).strftime(fmt)


def local_day(value: datetime | date | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return local_dt(value, "%Y-%m-%d")
    return value.isoformat()


def number(value: int | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


def pct(value: float | None) -> str:
    """A ratio (0.1234) as a percentage ('12.3%')."""
    if value is None:
        return "—"
    return f"{100 * value:.1f}%"


def to_json(value: Any) -> Markup:
    """Data for a chart's ``data-chart`` attribute (escaped for an HTML attribute)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return Markup(text.replace("&", "&amp;").replace("'", "&#39;").replace('"', "&quot;"))


@lru_cache(maxsize=len(i18n.LOCALES))
def environment(locale: str) -> Environment:
    env = Environment(
        loader=PackageLoader("siyu.web", "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(
        dt=local_dt,
        day=local_day,
        yuan=rules.yuan,
        count_of=lambda key, counts: int(counts.get(key, 0)),
        yuan_number=lambda fen: round(int(fen) / 100, 2),
        num=number,
        pct=pct,
        json_attr=to_json,
        member_no=member_no,
        mask_phone=mask_phone,
    )
    env.globals.update(
        locale=locale,
        html_lang=i18n.HTML_LANG[locale],
        locale_names=i18n.LOCALE_NAMES,
        locales=i18n.LOCALES,
    )
    return env


def render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    locale = locale_of(request)
    env = environment(locale)
    html = env.get_template(template).render(request=request, path=request.url.path, **context)
    response = HTMLResponse(html, status_code=status_code)
    if request.query_params.get("lang"):
        response.set_cookie(i18n.LANG_COOKIE, locale, max_age=365 * 86400, samesite="lax")
    return response


def gettext(request: Request, message: str) -> str:
    """A message in the request's language, for text built in Python (flash messages)."""
    return i18n.gettext(locale_of(request), message)
