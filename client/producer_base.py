"""What the trio and blocking producers share, with no I/O: options, batching, send state."""

from __future__ import annotations

from collections.abc import Callable

from client.accumulator import Accumulator, ProducerBatch
from client.partitioner import StickyPartitioner, partition_for_key
from client.sender import SendState, parse_acks

MAX_IN_FLIGHT_IDEMPOTENT = 5


def check_config(acks, idempotent, max_in_flight: int) -> tuple[int, bool]:
    """Validated ``(acks, idempotent)``; idempotence needs acknowledgements."""
    acks = parse_acks(acks)
    if idempotent is None:
        idempotent = acks != 0
    if idempotent and acks == 0:
        raise ValueError("idempotent=True needs acks=1 or acks='all' (acks=0 gets no answers)")
    if idempotent and max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT:
        raise ValueError(f"idempotence allows at most {MAX_IN_FLIGHT_IDEMPOTENT} in flight")
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    return acks, idempotent


class ProducerBase:
    """Producer options, validated, and the sans-IO parts built from them.

    ``clock`` is the monotonic clock batches linger by (trio's or ``time.monotonic``).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        acks=1,
        linger_ms: float = 5,
        batch_bytes: int = 1024 * 1024,
        buffer_bytes: int = 32 * 1024 * 1024,
        idempotent: bool | None = None,
        retries: int = 2**31 - 1,
        delivery_timeout_ms: int = 120_000,
        request_timeout_ms: int = 30_000,
        max_in_flight: int = 5,
        partitioner=partition_for_key,
    ) -> None:
        acks, idempotent = check_config(acks, idempotent, max_in_flight)
        self.linger_s = linger_ms / 1000
        self.buffer_bytes = buffer_bytes
        self.max_in_flight = max_in_flight
        self.partitioner = partitioner
        self._sticky = StickyPartitioner()
        self._acc = Accumulator(batch_bytes, clock, self._on_seal)
        self._state = SendState(
            self._acc,
            acks=acks,
            idempotent=idempotent,
            retries=retries,
            delivery_timeout_s=delivery_timeout_ms / 1000,
            request_timeout_ms=request_timeout_ms,
        )
        self._partitions: dict[str, int] = {}

    def _on_seal(self, batch: ProducerBatch) -> None:
        """A batch was sealed and queued for sending."""
        raise NotImplementedError
