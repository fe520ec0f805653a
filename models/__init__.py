"""Networks, their configs, the TACE Action Base and plan schema, and the shared exception hierarchy.

Nothing in this package reads case files or knows about the UI.
"""
