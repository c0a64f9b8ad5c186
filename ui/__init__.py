"""Streamlit building blocks shared by the pages: model loading, sidebar controls, conversation rendering."""
