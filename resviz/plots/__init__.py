"""Plot builders: numpy/dicts -> plotly Figure. Never imports streamlit."""
