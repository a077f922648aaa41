"""confluent-kafka (Debian's python3-confluent-kafka) against a broker, for tests/integration/compat.rs.

    produce BOOTSTRAP TOPIC COUNT   an idempotent producer, 5 requests in flight: COUNT messages
                                    "py-<i>"; prints the number delivered.
    consume BOOTSTRAP TOPIC GROUP MAX
                                    subscribe() in GROUP, read until MAX messages or 10 s of
                                    silence, commit() after each poll batch, close; prints one
                                    line per message: partition, offset, value.
"""
import sys

from confluent_kafka import Consumer, KafkaException, Producer


def produce(bootstrap, topic, count):
    delivered = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append(msg.offset())

    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "acks": "all",
        "linger.ms": 2,
        "batch.num.messages": 100,
    })
    for i in range(count):
        while True:
            try:
                p.produce(topic, key=str(i % 7), value=f"py-{i}", on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(30)
    if remaining or errors:
        sys.exit(f"{remaining} undelivered, errors: {errors[:3]}")
    print(len(delivered))


def consume(bootstrap, topic, group, limit):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([topic])
    seen = 0
    idle = 0.0
    out = sys.stdout
    while seen < limit and idle < 10.0:
        batch = c.consume(num_messages=min(1000, limit - seen), timeout=0.5)
        if not batch:
            idle += 0.5
            continue
        idle = 0.0
        for m in batch:
            if m.error() is not None:
                raise KafkaException(m.error())
            out.write(f"{m.partition()}\t{m.offset()}\t{m.value().decode()}\n")
            seen += 1
        c.commit(asynchronous=False)
    c.close()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "produce":
        produce(args[0], args[1], int(args[2]))
    elif cmd == "consume":
        consume(args[0], args[1], args[2], int(args[3]))
    else:
        sys.exit(f"unknown command {cmd}")
