"""Encrypted local vault (later issue). Never imports streamlit."""
