"""Sluice's own protocol (``sluice.protocol.messages``) served on the domain layer."""
