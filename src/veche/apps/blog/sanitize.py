"""HTML from users, reduced to an allow-list with nh3 (the Rust `ammonia` sanitizer).

Only the tags and attributes listed here survive; scripts, styles, event handlers,
`javascript:` and `data:` URLs, unknown tags and comments never do. Links get
`rel="noopener noreferrer nofollow"`. Comments get a smaller set than posts.
"""

from __future__ import annotations

import html
import re

import nh3

_INLINE = {"a", "b", "strong", "i", "em", "u", "s", "code", "br", "sub", "sup", "mark"}
_BLOCK = {"p", "blockquote", "pre", "ul", "ol", "li", "hr"}
POST_TAGS = _INLINE | _BLOCK | {"h2", "h3", "h4", "img", "figure", "figcaption"}
COMMENT_TAGS = _INLINE | {"p", "blockquote", "pre", "ul", "ol", "li"}
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "ol": {"start"},
}
_SCHEMES = {"http", "https", "mailto"}
_REL = "noopener noreferrer nofollow"
# Beyond nh3's scheme check: a URL is absolute http(s) (or mailto: for links) or a path
# on this site; anything else a browser might resolve in surprising ways is dropped.
_SAFE_URL = re.compile(r"^(?:https?://[^\s`<>\"']+|/(?!/)[^\s`<>\"']*)$", re.IGNORECASE)
_SAFE_HREF = re.compile(r"^(?:mailto:[^\s`<>\"']+|#[\w-]*)$", re.IGNORECASE)


def _filter_attribute(element: str, attribute: str, value: str) -> str | None:
    if attribute == "src" or (attribute == "href" and element == "a"):
        if _SAFE_URL.match(value) or (attribute == "href" and _SAFE_HREF.match(value)):
            return value
        return None
    return value


def clean_post_html(text: str) -> str:
    return nh3.clean(
        text,
        tags=POST_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_SCHEMES,
        link_rel=_REL,
        strip_comments=True,
        attribute_filter=_filter_attribute,
    ).strip()


def clean_comment_html(text: str) -> str:
    return nh3.clean(
        text,
        tags=COMMENT_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes=_SCHEMES,
        link_rel=_REL,
        strip_comments=True,
        attribute_filter=_filter_attribute,
    ).strip()


def plain_text(text: str) -> str:
    """The text of some HTML, tags dropped and entities decoded, spaces collapsed."""
    stripped = nh3.clean(text, tags=set(), strip_comments=True)
    return " ".join(html.unescape(stripped).split())


def excerpt_of(text: str, limit: int = 280) -> str:
    """Up to `limit` characters of the text, escaped so it is safe inside HTML too."""
    words = plain_text(text)
    if len(words) > limit:
        words = words[: limit - 1].rsplit(" ", 1)[0] + "…"
    return html.escape(words, quote=False)
