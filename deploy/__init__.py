"""Serving resviz from several app processes behind a reverse proxy (see deploy/README.md).

    python -m deploy.start --replicas 2 --port 8080      # 2 streamlit replicas + HAProxy on one machine
"""
