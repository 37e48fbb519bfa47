"""Kafka's protocol on the broker's domain: the Kafka listener's adapter (issue 17).

A sibling of ``adapters.sluice``: the same ``Session`` serves each connection, driven by a
``KafkaConnection`` (the sans-IO ``protocol.kafka.KafkaServerConnection`` plus the handlers);
the handlers translate Kafka's messages to the domain's operations and back. Topics, producer
ids and committed offsets are the domain's, so they are shared with Sluice's clients.
"""
