"""Streamlit UI of MeWM Workbench. Pages call `pipelines`; they never read files or build networks themselves."""
