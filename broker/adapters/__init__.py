"""Protocol adapters: each translates one wire protocol to and from domain calls.

See docs/DESIGN-NOTES.md, "Layers inside the broker".
"""
