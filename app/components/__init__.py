"""Reusable Streamlit pieces of the pages (widgets → one `pipelines` call → render)."""
