"""resviz.inputs.text: what a student names is shown as the characters they typed, never as markup."""
from streamlit.testing.v1 import AppTest

from resviz.inputs import text

HOSTILE = '<a href="http://evil.example/">cat</a> ![x](http://evil.example/i.png) $\\Huge big$ :red[red] **b**'


def test_markdown_escape_renders_the_typed_characters():
    def page(name):
        import streamlit as st
        from resviz.inputs import text as t
        st.markdown(t.md(name, limit=500))

    at = AppTest.from_function(page, args=(HOSTILE,)).run()
    # AppTest keeps the markdown source; Streamlit's renderer unescapes it to exactly the student's characters
    shown = at.markdown[0].value
    assert "<a" not in shown.replace("\\<a", "") and "![" not in shown.replace("\\!\\[", "")
    assert "\\$" in shown and "\\:red" in shown and "\\*\\*" in shown


def test_plotly_escape_has_no_tags_and_no_latex():
    out = text.plotly(HOSTILE, limit=500)
    assert "<" not in out and ">" not in out and "$" not in out
    assert out.startswith('&lt;a href="http://evil.example/"&gt;cat')  # Plotly shows &quot; as typed: not used


def test_markdown_escape_splits_what_gfm_would_link_with_an_invisible_word_joiner():
    out = text.md("see http://evil.example/x, www.evil.example and me@evil.example", limit=500)
    assert out == ("see http\\:\u2060//evil\\.example/x, www\u2060\\.evil\\.example and me\u2060@evil\\.example")
    assert out.replace(text.WORD_JOINER, "").replace("\\", "") == "see http://evil.example/x, www.evil.example and " \
        "me@evil.example"  # what a reader sees: the characters typed


def test_latex_escape_is_one_text_group():
    assert text.latex("a_b{}\\x") == r"\text{a\_b\{\}\backslash x}"


def test_long_and_control_names_are_shortened_to_one_line():
    assert text.shorten("x" * 500) == "x" * 79 + "…"
    assert text.shorten("a\nb\x00c") == "a b c"
