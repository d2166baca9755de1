"""Tools that drive the app from outside, as students would: the public client that benchmarks, the load test,
the screenshots and the browser tests share.

- ``resviz.tools.server``: start and stop ``streamlit run app.py`` on loopback; its memory and CPU (no streamlit).
- ``resviz.tools.session``: one student's tab over the websocket, no browser: open a page, set widgets, click.
- ``resviz.tools.browser``: headless Chromium (playwright): launch, wait until idle, exceptions, screenshots.
- ``python -m resviz.tools.load_test``: a classroom of sessions against one server.
- ``python -m resviz.tools.screenshots``: every page in Chromium, saved as PNGs.

``import resviz`` does not import this package: a notebook never pulls in streamlit's server internals.
"""
