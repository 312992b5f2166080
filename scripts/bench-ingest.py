#!/usr/bin/env python3
"""Ad-hoc end-to-end ingest measurement until the benchmark harness exists.

Writes N Cowrie-like event lines over C concurrent connections to a running node's ingest
port and reports how long until all of them are stored in the Core's SQLite file. Run a
release build first, e.g.:

    target/release/honeybee up --data-dir /tmp/bench --event-port 9200 --node-port 9201 \
        --api-port 9202 --log-level warn &
    scripts/bench-ingest.py --events 200000 --connections 4 --port 9200 \
        --database /tmp/bench/core/honeybee.sqlite3

Start from an empty data directory: the script counts every row in the events table.
"""
import argparse
import json
import socket
import sqlite3
import threading
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--database", required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    arguments = parser.parse_args()

    line = json.dumps({
        "eventid": "cowrie.login.failed", "username": "root", "password": "123456",
        "message": "login attempt [root/123456] failed", "sensor": "cowrie-01",
        "src_ip": "203.0.113.7", "src_port": 51234, "dst_ip": "10.0.0.2", "dst_port": 22,
        "session": "a1b2c3d4e5f6", "protocol": "ssh", "timestamp": "2024-01-15T10:30:00.123456Z",
    }) + "\n"
    per_connection = arguments.events // arguments.connections
    total = per_connection * arguments.connections
    payload = (line * per_connection).encode()

    def send():
        with socket.create_connection(("127.0.0.1", arguments.port)) as connection:
            connection.sendall(payload)

    started = time.monotonic()
    senders = [threading.Thread(target=send) for _ in range(arguments.connections)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    sent = time.monotonic() - started

    database = sqlite3.connect(f"file:{arguments.database}?mode=ro", uri=True)
    stored = 0
    while time.monotonic() - started < arguments.timeout:
        stored = database.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        if stored >= total:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    print(f"line: {len(line)} bytes; sent {total} in {sent:.2f} s; "
          f"stored {stored} in {elapsed:.2f} s = {stored / elapsed:,.0f} events/s")


if __name__ == "__main__":
    main()
