"""Read a topic from the beginning with the blocking client and print each record.

    python examples/consumer.py --bootstrap 127.0.0.1:9092 --topic greetings --count 10
"""

import argparse

from sluice.client.sync import Consumer


def main(bootstrap: str, topic: str, count: int) -> None:
    with Consumer(bootstrap, topics=[topic], auto_offset_reset="earliest") as consumer:
        for seen, record in enumerate(consumer, 1):
            key = record.key.decode() if record.key else "-"
            print(f"{record.partition}@{record.offset} {key}: {record.value.decode()}")
            if seen >= count:
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="greetings")
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    main(args.bootstrap, args.topic, args.count)
