"""Connections: the channel interface and its implementations (raw sockets, trio streams).

See docs/DESIGN-NOTES.md, "Layers inside the broker".
"""
