"""Produce a few keyed records and print where each landed.

    python examples/producer.py --bootstrap 127.0.0.1:9092 --topic greetings --count 10
"""

import argparse

import trio
from sluice.client.admin import Admin
from sluice.client.errors import TopicAlreadyExistsError
from sluice.client.producer import Producer


async def main(bootstrap: str, topic: str, count: int) -> None:
    async with Admin(bootstrap) as admin:
        try:
            await admin.create_topic(topic, partitions=3)
        except TopicAlreadyExistsError:
            pass
    async with Producer(bootstrap, acks="all") as producer:
        handles = [
            await producer.send(topic, f"hello {i}".encode(), key=f"user-{i % 3}".encode())
            for i in range(count)
        ]
        for handle in handles:
            meta = await handle
            print(f"{meta.topic}[{meta.partition}]@{meta.offset}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="greetings")
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    trio.run(main, args.bootstrap, args.topic, args.count)
