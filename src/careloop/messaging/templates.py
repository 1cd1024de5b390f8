"""Message templates: Jinja2 in a sandbox, personalised from traits and profile fields, Chinese and English.

A template is a content item's text per language (``zh``, ``en``; e-mail also ``subject_zh`` / ``html_zh``
…). `render` picks the patient's language (falling back to the default language, then to any the template
has), renders it with `StrictUndefined` — a variable the patient's data lacks is an error that names it,
never an empty gap in a message — and, for SMS, makes the text sendable:

1. the signature ``【签名】`` is put in front unless the text already starts or ends with one;
2. the opt-out text (``回T退订`` / ``Reply T to opt out``, configurable) is appended unless the text already
   has one (``退订`` in Chinese; "opt out" / "unsubscribe" / the configured text in English);
3. characters and segments are counted — domestic SMS in China: up to 70 characters (signature and opt-out
   included) is one message, longer text is split into segments of 67 characters; every character counts
   one (Chinese, Latin letters, digits, punctuation, spaces), a character outside the Basic Multilingual
   Plane (an emoji) two. International SMS: 160 / 153 for text entirely in the GSM 7-bit alphabet (its
   extension characters ``^{}[]~|€\\`` counting two), else 70 / 67;
4. a text over `SmsRules.max_segments` is refused.

Templates run in Jinja2's immutable sandbox: they can read the variables given and call the usual filters
(plus ``date``), nothing else. HTML (e-mail) is autoescaped, text is not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from careloop.errors import ConfigError

LANGUAGES = ("zh", "en")
KINDS = ("sms", "wechat", "app_push", "email", "outbox")
#: domestic (China) SMS: one message holds 70 characters, a long one is sent in segments of 67
SINGLE, SEGMENT = 70, 67
#: international SMS in the GSM 7-bit alphabet
GSM_SINGLE, GSM_SEGMENT = 160, 153
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")
_LEADING_SIGN = re.compile(r"^\s*【[^【】]{1,20}】")
_TRAILING_SIGN = re.compile(r"【[^【】]{1,20}】\s*$")
_EN_OPT_OUT = re.compile(r"opt[\s-]?out|unsubscribe|reply\s+(t|td|stop)\b", re.IGNORECASE)
_END_PUNCT = tuple("。！？；，、.!?;,…")

DEFAULT_OPT_OUT = {"zh": "回T退订", "en": "Reply T to opt out"}


class TemplateError(ConfigError):
    """A template cannot be rendered or its result cannot be sent (the message says which and why)."""

    http_status = 422


@dataclass(frozen=True)
class MessageTemplate:
    """A message's text per language: `body` (required), `subject` and `html` (e-mail)."""

    body: Mapping[str, str]
    subject: Mapping[str, str] = field(default_factory=dict)
    html: Mapping[str, str] = field(default_factory=dict)
    name: str = "message"

    @classmethod
    def from_content(cls, body: Mapping[str, str], name: str = "message") -> MessageTemplate:
        """From a content item's body: ``{"zh": …, "en": …, "subject_zh": …, "html_en": …}``."""
        texts: dict[str, dict[str, str]] = {"body": {}, "subject": {}, "html": {}}
        for key, text in body.items():
            part, _, lang = key.rpartition("_")
            if part in ("subject", "html"):
                texts[part][lang] = text
            elif not part:
                texts["body"][key] = text
            else:
                raise TemplateError(
                    f"{name}: content key {key!r} is not a language, subject_<lang> or html_<lang>"
                )
        return cls(texts["body"], texts["subject"], texts["html"], name)


@dataclass(frozen=True)
class SmsRules:
    """How SMS texts are completed and limited."""

    sign_name: str | None = None  # without 【】; e.g. 某某医院
    opt_out: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_OPT_OUT))
    add_opt_out: bool = True  # every commercial SMS needs one; one-time codes may do without
    max_segments: int = 5
    international: bool = False


@dataclass(frozen=True)
class SmsCount:
    characters: int
    segments: int
    encoding: str  # domestic | gsm7 | ucs2


@dataclass(frozen=True)
class RenderedMessage:
    body: str
    subject: str | None
    html: str | None
    language: str
    length: int  # characters as the provider counts them (SMS) or code points
    segments: int  # SMS segments billed; 1 for other kinds


def count_sms(text: str, *, international: bool = False) -> SmsCount:
    """Characters and segments of an SMS text (see the module doc for the rules)."""
    if international and all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text):
        n = sum(2 if ch in _GSM_EXTENDED else 1 for ch in text)
        return SmsCount(n, _segments(n, GSM_SINGLE, GSM_SEGMENT), "gsm7")
    n = len(text.encode("utf-16-le")) // 2
    return SmsCount(n, _segments(n, SINGLE, SEGMENT), "ucs2" if international else "domestic")


def _segments(n: int, single: int, segment: int) -> int:
    if n == 0:
        return 0
    return 1 if n <= single else math.ceil(n / segment)


def normalise_language(language: str | None) -> str | None:
    """``zh-CN``, ``zh_Hans``, ``ZH`` -> ``zh``; ``en-US`` -> ``en``."""
    if not language:
        return None
    return re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0] or None


def pick_language(preferred: str | None, available: Iterable[str], default: str = "zh") -> str:
    """The patient's language if the template has it, else the default, else the first it has."""
    have = list(available)
    if not have:
        raise TemplateError("the template has no text in any language")
    for lang in (normalise_language(preferred), default, *LANGUAGES):
        if lang in have:
            return lang
    return have[0]


def personalisation(
    profile: Mapping[str, Any] | None = None, traits: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Template variables: traits and profile fields by name (a profile field wins over a trait of the same
    name), and both whole as ``profile`` and ``traits``."""
    out: dict[str, Any] = {**(traits or {}), **(profile or {})}
    out["profile"] = dict(profile or {})
    out["traits"] = dict(traits or {})
    return out


def _date(value: Any, fmt: str = "%Y-%m-%d") -> str:
    """``{{ refill_date | date('%m月%d日') }}``: dates, datetimes and ISO strings."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, date):
        raise TypeError(f"date filter needs a date, not {type(value).__name__}")
    return value.strftime(fmt)


class TemplateRenderer:
    """Renders templates; compiled templates are cached (bounded), so one renderer serves many sends."""

    def __init__(
        self, *, default_language: str = "zh", sms: SmsRules | None = None, cache_size: int = 1024
    ) -> None:
        self.default_language = default_language
        self.sms = sms or SmsRules()
        self._text_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._html_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
        for env in (self._text_env, self._html_env):
            env.filters["date"] = _date
        self._compile = lru_cache(maxsize=cache_size)(self._compile_uncached)

    def _compile_uncached(self, source: str, html: bool, where: str) -> Template:
        env = self._html_env if html else self._text_env
        try:
            return env.from_string(source)
        except TemplateSyntaxError as e:
            raise TemplateError(f"{where}: template syntax error on line {e.lineno}: {e.message}") from None

    def render_text(
        self, source: str, variables: Mapping[str, Any], *, html: bool = False, where: str = "template"
    ) -> str:
        """One template string rendered; errors name the variable and say how to fix it."""
        template = self._compile(source, html, where)
        try:
            return template.render(dict(variables))
        except UndefinedError as e:
            var = _missing_name(str(e))
            raise TemplateError(
                f"{where} uses `{var}`, which the patient's data does not have: add that trait or profile "
                f"field, or give a default with {{{{ {var} | default('…') }}}}"
            ) from None
        except SecurityError as e:
            raise TemplateError(f"{where} does something templates may not do: {e}") from None
        except (TypeError, ValueError) as e:
            raise TemplateError(f"{where}: {e}") from None

    def render(
        self,
        template: MessageTemplate,
        variables: Mapping[str, Any],
        *,
        kind: str,
        language: str | None = None,
        sms: SmsRules | None = None,
    ) -> RenderedMessage:
        """The message for one patient: `variables` from `personalisation(profile, traits)`, `language` the
        patient's preferred one (``zh-CN`` …), `kind` the channel kind it goes out on."""
        if kind not in KINDS:
            raise TemplateError(f"message kind {kind!r} is not one of {', '.join(KINDS)}")
        lang = pick_language(language, template.body, self.default_language)
        where = f"template {template.name} ({lang})"
        body = self.render_text(template.body[lang], variables, where=where).strip()
        subject = html = None
        if template.subject:
            s_lang = pick_language(lang, template.subject, self.default_language)
            subject = self.render_text(template.subject[s_lang], variables, where=f"{where} subject").strip()
        if kind == "email":
            if not subject:
                raise TemplateError(
                    f"{where}: an e-mail needs a subject (subject_{lang} in the content item)"
                )
            if template.html:
                h_lang = pick_language(lang, template.html, self.default_language)
                html = self.render_text(template.html[h_lang], variables, html=True, where=f"{where} html")
        if not body:
            raise TemplateError(f"{where} renders to an empty message")
        if kind != "sms":
            return RenderedMessage(body, subject, html, lang, len(body), 1)
        rules = sms or self.sms
        text = complete_sms(body, lang, rules, where)
        counted = count_sms(text, international=rules.international)
        if counted.segments > rules.max_segments:
            raise TemplateError(
                f"{where} is {counted.characters} characters = {counted.segments} SMS segments, over the limit "
                f"of {rules.max_segments}: shorten the text (one SMS holds {SINGLE} characters, each further "
                f"segment {SEGMENT}, signature and opt-out included)"
            )
        return RenderedMessage(text, subject, None, lang, counted.characters, counted.segments)


def complete_sms(body: str, language: str, rules: SmsRules, where: str = "SMS") -> str:
    """`body` with the signature in front (unless it has one) and the opt-out text (unless it has one)."""
    text = body.strip()
    leading = _LEADING_SIGN.match(text)
    trailing = None if leading else _TRAILING_SIGN.search(text)
    if not leading and not trailing:
        if not rules.sign_name:
            raise TemplateError(f"{where}: an SMS needs the sender's signature 【…】: set the sign name")
        sign = rules.sign_name.strip().strip("【】")
        text = f"【{sign}】{text}"
    if rules.add_opt_out and not _has_opt_out(text, rules):
        opt_out = rules.opt_out.get(language) or rules.opt_out.get("zh") or DEFAULT_OPT_OUT["zh"]
        core, tail = (text[: trailing.start()].rstrip(), trailing.group().strip()) if trailing else (text, "")
        if language == "zh":
            sep = "" if core.endswith(_END_PUNCT) else "，"
        else:
            sep = " " if core.endswith(_END_PUNCT) else ". "
        text = f"{core}{sep}{opt_out}{tail}"
    return text


def _has_opt_out(text: str, rules: SmsRules) -> bool:
    if any(o and o.lower() in text.lower() for o in rules.opt_out.values()):
        return True
    return "退订" in text or bool(_EN_OPT_OUT.search(text))


def _missing_name(message: str) -> str:
    for pattern in (r"'([^']+)' is undefined", r"has no attribute '([^']+)'", r"no element '?([^']+?)'?$"):
        found = re.search(pattern, message)
        if found:
            return found.group(1)
    return message


_DEFAULT = TemplateRenderer()


def render(
    template: MessageTemplate,
    variables: Mapping[str, Any],
    *,
    kind: str,
    language: str | None = None,
    sms: SmsRules | None = None,
) -> RenderedMessage:
    """`TemplateRenderer.render` with a shared default renderer (default language zh)."""
    return _DEFAULT.render(template, variables, kind=kind, language=language, sms=sms)
