"""A small pipeline: read words from one topic, upper-case them, write them to another.

Seeds ``--source`` with a few words, transforms ``--count`` records into ``--sink``, then
prints the sink's records. Consumer and producer run in one trio program.

    python examples/pipeline.py --bootstrap 127.0.0.1:9092 --count 5
"""

import argparse

import trio
from sluice.client.admin import Admin
from sluice.client.consumer import Consumer
from sluice.client.errors import TopicAlreadyExistsError
from sluice.client.producer import Producer

WORDS = [b"alpha", b"bravo", b"charlie", b"delta", b"echo"]


async def main(bootstrap: str, source: str, sink: str, count: int) -> None:
    async with Admin(bootstrap) as admin:
        for topic in (source, sink):
            try:
                await admin.create_topic(topic)
            except TopicAlreadyExistsError:
                pass
    async with Producer(bootstrap) as producer:
        await producer.send_batch(source, [WORDS[i % len(WORDS)] for i in range(count)])
        async with Consumer(bootstrap, topics=[source], auto_offset_reset="earliest") as words:
            done = 0
            async for record in words:
                await producer.send(sink, record.value.upper(), key=record.key)
                done += 1
                if done == count:
                    break
        await producer.flush()
    async with Consumer(bootstrap, topics=[sink], auto_offset_reset="earliest") as results:
        async for batch in results.batches():
            for record in batch:
                print(record.value.decode())
            count -= len(batch)
            if count <= 0:
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--source", default="words")
    parser.add_argument("--sink", default="shouted")
    parser.add_argument("--count", type=int, default=5)
    args = parser.parse_args()
    trio.run(main, args.bootstrap, args.source, args.sink, args.count)
