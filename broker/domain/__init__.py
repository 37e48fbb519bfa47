"""The broker's domain layer: topics, partitions, producers, groups and committed offsets.

No wire types and no sockets: protocol adapters (``sluice.broker.adapters``) translate their
requests into calls on it. See docs/DESIGN-NOTES.md, "Layers inside the broker".
"""
