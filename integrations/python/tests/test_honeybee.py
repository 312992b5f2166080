"""Tests of the Python kit against a real HoneyBee Core and Node.

Run by crates/cli/tests/integrations.rs, which starts the Core and a Node and passes:
HONEYBEE_TEST_API (Core API base URL), HONEYBEE_TEST_EVENT_PORT (the running node's ingest
port), HONEYBEE_TEST_CORE (Core node address, for nodes this suite starts itself) and
HONEYBEE_NODE_BIN (the honeybee-node binary).
"""

import ast
import contextlib
import datetime
import io
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import honeybee  # noqa: E402

API = os.environ["HONEYBEE_TEST_API"]
EVENT_PORT = int(os.environ["HONEYBEE_TEST_EVENT_PORT"])
CORE = os.environ["HONEYBEE_TEST_CORE"]
NODE_BIN = os.environ["HONEYBEE_NODE_BIN"]


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def events_of(pot_id):
    events, cursor = [], None
    while True:
        url = "%s/api/v1/events?limit=1000&pot_id=%s" % (API, pot_id)
        if cursor:
            url += "&cursor=" + cursor
        with urllib.request.urlopen(url, timeout=5) as response:
            page = json.load(response)
        events.extend(page["events"])
        cursor = page["next_cursor"]
        if not cursor:
            return events


def wait_for_events(pot_id, count, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        events = events_of(pot_id)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


@contextlib.contextmanager
def running_node(event_port):
    """A second real node on `event_port`, stopped at the end."""
    with tempfile.TemporaryDirectory() as state:
        node = subprocess.Popen(
            [NODE_BIN, "--core", CORE, "--event-port", str(event_port), "--data-dir", state, "--name", "kit-test"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield node
        finally:
            node.terminate()
            node.wait(10)


class CompatibilityTest(unittest.TestCase):
    def test_the_kit_is_python_3_8_syntax(self):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "honeybee.py")
        with open(path, encoding="utf-8") as source:
            ast.parse(source.read(), filename=path, feature_version=(3, 8))

    def test_the_kit_imports_nothing_outside_the_standard_library(self):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "honeybee.py")
        with open(path, encoding="utf-8") as source:
            tree = ast.parse(source.read())
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module.split(".")[0])
        self.assertTrue(modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names))


class LiveNodeTest(unittest.TestCase):
    def setUp(self):
        self.saved = {k: os.environ.get(k) for k in ("HONEYBEE_EVENT_PORT", "HONEYBEE_POT_ID", "HONEYBEE_HONEYPOT_TYPE")}

    def tearDown(self):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def test_settings_come_from_the_environment_with_the_guides_defaults(self):
        for key in self.saved:
            os.environ.pop(key, None)
        output = honeybee.HoneyBeeOutput()
        self.assertEqual((output.port, output.pot_id, output.pot_type), (9100, "honeypot-01", "honeypot"))
        os.environ.update(HONEYBEE_EVENT_PORT="9555", HONEYBEE_POT_ID="p-7", HONEYBEE_HONEYPOT_TYPE="telnetd")
        output = honeybee.HoneyBeeOutput()
        self.assertEqual((output.port, output.pot_id, output.pot_type), (9555, "p-7", "telnetd"))
        os.environ["HONEYBEE_EVENT_PORT"] = "not-a-port"
        self.assertEqual(honeybee.HoneyBeeOutput().port, 9100)

    def test_events_arrive_with_the_right_fields(self):
        pot_id = unique("py")
        os.environ.update(HONEYBEE_EVENT_PORT=str(EVENT_PORT), HONEYBEE_POT_ID=pot_id, HONEYBEE_HONEYPOT_TYPE="pytest-pot")
        output = honeybee.HoneyBeeOutput()
        output.start()
        before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
        self.assertTrue(
            output.send_event(
                "login.failed",
                {
                    "username": "root",
                    "password": "hunter2",
                    "src_ip": "203.0.113.9",
                    "when": datetime.datetime(2024, 1, 15, 10, 30, tzinfo=datetime.timezone.utc),
                    "raw": b"\xffbinary",
                    "object": object(),
                    "unicode": "日本語 ✓",
                },
            )
        )
        output.send_event("cowrie.session.connect", {"src_ip": "203.0.113.9"}, timestamp="2024-01-15T10:30:00.123456Z")
        output.stop()
        self.assertEqual(output.pending, 0)
        events = wait_for_events(pot_id, 4)
        by_type = {event["event_type"]: event for event in events}
        self.assertEqual(set(by_type), {"honeypot.started", "login.failed", "cowrie.session.connect", "honeypot.stopped"})
        login = by_type["login.failed"]
        self.assertEqual(login["pot_id"], pot_id)
        self.assertEqual(login["pot_type"], "pytest-pot")
        self.assertEqual(login["data"]["username"], "root")
        self.assertEqual(login["data"]["password"], "hunter2")
        self.assertEqual(login["data"]["when"], "2024-01-15 10:30:00+00:00")
        self.assertTrue(login["data"]["object"].startswith("<object object"))
        self.assertEqual(login["data"]["unicode"], "日本語 ✓")
        self.assertTrue(login["timestamp"].endswith("Z"))
        stamped = datetime.datetime.strptime(login["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        self.assertGreaterEqual(stamped, before)
        self.assertEqual(by_type["cowrie.session.connect"]["timestamp"], "2024-01-15T10:30:00.123456Z")
        self.assertEqual(output.sent, 4)

    def test_many_threads_share_one_output_safely(self):
        pot_id = unique("threads")
        output = honeybee.HoneyBeeOutput(port=EVENT_PORT, pot_id=pot_id, pot_type="threads")

        def produce(thread):
            for sequence in range(200):
                output.send_event("load", {"thread": thread, "sequence": sequence})

        threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertTrue(output.flush(10))
        output.close()
        events = wait_for_events(pot_id, 1600)
        self.assertEqual(len(events), 1600)
        self.assertEqual(len({(e["data"]["thread"], e["data"]["sequence"]) for e in events}), 1600)
        self.assertEqual(output.dropped, 0)


class NodeDownTest(unittest.TestCase):
    def test_a_hundred_events_without_a_node_never_block_raise_or_print_and_arrive_later(self):
        port = free_port()
        pot_id = unique("down")
        captured_stdout = io.StringIO()
        with contextlib.redirect_stdout(captured_stdout):
            output = honeybee.HoneyBeeOutput(port=port, pot_id=pot_id, pot_type="down")
            slowest = 0.0
            started = time.monotonic()
            for sequence in range(100):
                call_started = time.monotonic()
                self.assertTrue(output.send_event("buffered", {"sequence": sequence}))
                slowest = max(slowest, time.monotonic() - call_started)
            total = time.monotonic() - started
        self.assertLess(slowest, 1.0)
        self.assertLess(total, 1.0)
        self.assertEqual(captured_stdout.getvalue(), "")
        self.assertFalse(output.flush(0.3), "nothing can be written while the node is down")
        self.assertEqual(output.pending, 100)

        with running_node(port):
            events = wait_for_events(pot_id, 100)
            self.assertEqual(sorted(e["data"]["sequence"] for e in events), list(range(100)))
        output.close()

    def test_a_full_buffer_drops_the_oldest_events_and_counts_them(self):
        port = free_port()
        pot_id = unique("full")
        output = honeybee.HoneyBeeOutput(port=port, pot_id=pot_id, pot_type="full", buffer_size=10)
        for sequence in range(25):
            output.send_event("overflow", {"sequence": sequence})
        deadline = time.monotonic() + 5
        while output.dropped < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(output.dropped, 15)
        self.assertEqual(output.pending, 10)
        with running_node(port):
            events = wait_for_events(pot_id, 10)
            self.assertEqual(sorted(e["data"]["sequence"] for e in events), list(range(15, 25)))
        output.close()

    def test_failures_are_logged_at_a_limited_rate(self):
        records = []

        class Collect(logging.Handler):
            def emit(self, record):
                records.append(record)

        handler = Collect()
        honeybee.logger.addHandler(handler)
        try:
            output = honeybee.HoneyBeeOutput(port=free_port(), pot_id=unique("quiet"), buffer_size=5, log_interval=60)
            for sequence in range(200):
                output.send_event("noise", {"sequence": sequence})
            deadline = time.monotonic() + 5
            while not records and time.monotonic() < deadline:
                time.sleep(0.01)
            for sequence in range(200):
                output.send_event("noise", {"sequence": sequence})
            self.assertFalse(output.flush(0.3))
            output.close(timeout=0.2)
        finally:
            honeybee.logger.removeHandler(handler)
        kinds = [record.getMessage().split(":")[1].strip().split(" ")[0] for record in records]
        self.assertGreaterEqual(len(records), 1)
        self.assertLessEqual(len(records), 3, [r.getMessage() for r in records])
        self.assertEqual(len(kinds), len(set(kinds)), "each kind of problem is logged once per interval")

    def test_send_after_close_is_refused_quietly(self):
        output = honeybee.HoneyBeeOutput(port=free_port(), pot_id=unique("closed"))
        output.close(timeout=0.1)
        self.assertFalse(output.send_event("late", {}))


if __name__ == "__main__":
    unittest.main(verbosity=2)
