"""Strings a student controls (file, folder, class, state-dict key and zip entry names, URL values), made inert for
the place they land. One helper per place: Streamlit markdown (captions, errors, info boxes, headings), LaTeX, and
Plotly's HTML subset (titles, labels, hover text). Nothing a student names is ever rendered as markup."""
from __future__ import annotations

import html
import re

MAX_SHOWN = 80  # characters of one name shown; a 10,000-character folder name must not fill the screen

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$&:])")  # markdown, Streamlit's $LaTeX$, :colour[...] and
# :material/icon: directives, and autolinks (http: ...)
WORD_JOINER = "\u2060"  # invisible, zero width: splits what GFM would turn into a link without changing what is read
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)  # "http://", "www.", "a@b.c"


def shorten(name: object, limit: int = MAX_SHOWN) -> str:
    """``name`` as one line of at most ``limit`` characters (control characters and newlines shown as spaces)."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(name))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def md(name: object, limit: int = MAX_SHOWN) -> str:
    """``name`` as plain text inside Streamlit markdown (st.markdown, st.caption, st.error, ...): every character that
    markdown, HTML, LaTeX or a Streamlit directive would read is backslash-escaped, and a word joiner splits "://",
    "www." and "@" (GFM links bare URLs and e-mail addresses in the text left after escapes are read)."""
    return _MD_SPECIAL.sub(r"\\\1", _AUTOLINK.sub(WORD_JOINER, shorten(name, limit)))


def plotly(name: object, limit: int = MAX_SHOWN) -> str:
    """``name`` as plain text in a Plotly title, label, tick or hover text (Plotly reads a subset of HTML and, with
    MathJax, $...$): <, > and & escaped (Plotly reads those three back, not &quot;: quotes stay as typed), and every $
    written as &#36; so it is never read as LaTeX."""
    text = html.escape(shorten(name, limit), quote=False)
    return text.replace("$", "&#36;")


def latex(name: object, limit: int = MAX_SHOWN) -> str:
    r"""``name`` inside a LaTeX expression, as ``\text{...}`` with every special character escaped."""
    specials = {"\\": r"\backslash ", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
                "_": r"\_", "^": r"\^{}", "~": r"\~{}"}
    return r"\text{" + "".join(specials.get(ch, ch) for ch in shorten(name, limit)) + "}"
