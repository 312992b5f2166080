"""HoneyBee output kit for Python honeypots.

Sends events to the local HoneyBee Node as JSON lines (the integration guide's format) over
one long-lived TCP connection. It is built to never hurt its host:

* ``send_event`` only appends to a small bounded buffer and returns at once; a background
  thread does the network I/O, with short timeouts.
* While the node is unreachable, events wait in the buffer (oldest dropped first when it is
  full; drops are counted) and are delivered when the node comes back.
* No exception escapes, nothing is printed; problems are logged through the ``honeybee``
  logger at most once per ``log_interval`` seconds per kind of problem.

Standard library only; Python 3.8 or newer.
"""

from __future__ import annotations

import atexit
import collections
import datetime
import json
import logging
import os
import select
import socket
import threading
import time
import weakref
from typing import Any, Deque, Dict, Optional

__all__ = ["HoneyBeeOutput"]
__version__ = "0.1.0"

logger = logging.getLogger("honeybee")
# A library never configures logging for its host: without a handler of the host's, nothing
# is printed anywhere.
logger.addHandler(logging.NullHandler())

DEFAULT_PORT = 9100
DEFAULT_POT_ID = "honeypot-01"
DEFAULT_POT_TYPE = "honeypot"

# Every live output, so queued events are flushed when the interpreter exits.
_outputs: "weakref.WeakSet[HoneyBeeOutput]" = weakref.WeakSet()


@atexit.register
def _flush_outputs_at_exit() -> None:
    # A short-lived script's last events still reach the node (bounded wait per output).
    for output in list(_outputs):
        output._flush_at_exit()


def utc_timestamp(moment: Optional[datetime.datetime] = None) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix and microseconds."""
    moment = moment or datetime.datetime.now(datetime.timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _jsonable(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps`` accepts: unknown types become strings."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _encode(event: Dict[str, Any]) -> bytes:
    try:
        text = json.dumps(event, default=str, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        # Non-string keys or circular structures: rebuild a plain copy.
        text = json.dumps(_jsonable(event), default=str, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8", "replace")


class _RateLimitedLog:
    """Logs each kind of problem at most once per interval, with how often it happened."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last: Dict[str, float] = {}
        self.suppressed: Dict[str, int] = collections.defaultdict(int)

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last = self.last.get(kind)
        if last is not None and now - last < self.interval:
            self.suppressed[kind] += 1
            return
        self.last[kind] = now
        repeated = self.suppressed.pop(kind, 0)
        suffix = " (%d similar messages suppressed)" % repeated if repeated else ""
        logger.warning(message + suffix, *args)


class HoneyBeeOutput:
    """Forwards honeypot events to the HoneyBee Node.

    The three settings come from the environment the node gives its honeypots
    (``HONEYBEE_EVENT_PORT``, ``HONEYBEE_POT_ID``, ``HONEYBEE_HONEYPOT_TYPE``) unless passed
    explicitly. ``host`` defaults to ``HONEYBEE_EVENT_HOST`` or ``127.0.0.1`` (the node listens
    on IPv4 loopback; ``localhost`` may resolve to ``::1`` first).
    """

    def __init__(
        self,
        port: Optional[int] = None,
        pot_id: Optional[str] = None,
        pot_type: Optional[str] = None,
        host: Optional[str] = None,
        buffer_size: int = 10000,
        timeout: float = 0.5,
        log_interval: float = 60.0,
    ) -> None:
        self.port = port if port is not None else self._env_port()
        self.pot_id = pot_id or os.getenv("HONEYBEE_POT_ID") or DEFAULT_POT_ID
        self.pot_type = pot_type or os.getenv("HONEYBEE_HONEYPOT_TYPE") or DEFAULT_POT_TYPE
        self.host = host or os.getenv("HONEYBEE_EVENT_HOST") or "127.0.0.1"
        self.timeout = timeout
        # Counters, readable by the host for its own monitoring.
        self.sent = 0
        self.dropped = 0
        self._buffer: Deque[bytes] = collections.deque(maxlen=max(1, buffer_size))
        self._in_flight = 0
        self._condition = threading.Condition()
        self._closing = False
        self._socket: Optional[socket.socket] = None
        self._log = _RateLimitedLog(log_interval)
        self._retry_delay = 0.1
        self._thread: Optional[threading.Thread] = None
        _outputs.add(self)

    @staticmethod
    def _env_port() -> int:
        text = os.getenv("HONEYBEE_EVENT_PORT", str(DEFAULT_PORT))
        try:
            port = int(text)
            if 0 < port < 65536:
                return port
        except ValueError:
            pass
        logger.warning("HONEYBEE_EVENT_PORT=%r is not a port number; using %d", text, DEFAULT_PORT)
        return DEFAULT_PORT

    # The guide's API -------------------------------------------------------------------

    def send_event(
        self, event_type: str, data: Any = None, timestamp: Optional[Any] = None
    ) -> bool:
        """Queues one event; returns False only if it could not even be queued.

        ``timestamp`` may be a ``datetime`` or a string the node understands (RFC 3339 / ISO
        8601, or Unix seconds as a number); by default it is now, in UTC.
        """
        try:
            if isinstance(timestamp, datetime.datetime):
                timestamp = utc_timestamp(timestamp)
            elif timestamp is None:
                timestamp = utc_timestamp()
            if data is None:
                data = {}
            elif not isinstance(data, dict):
                data = {"value": data}
            line = _encode(
                {
                    "pot_id": self.pot_id,
                    "pot_type": self.pot_type,
                    "event_type": str(event_type),
                    "timestamp": timestamp,
                    "data": data,
                }
            )
            with self._condition:
                if self._closing:
                    return False
                if len(self._buffer) == self._buffer.maxlen:
                    self.dropped += 1
                    self._log.warning(
                        "buffer", "honeybee: buffer full, dropped the oldest event (%d dropped so far)", self.dropped
                    )
                self._buffer.append(line)
                self._ensure_thread()
                self._condition.notify()
            return True
        except Exception as error:  # never let the honeypot crash because of us
            self._log.warning("encode", "honeybee: could not queue event %r: %s", event_type, error)
            return False

    def start(self) -> None:
        """Called when the honeypot starts."""
        self.send_event("honeypot.started", {})

    def stop(self) -> None:
        """Called when the honeypot stops: sends ``honeypot.stopped`` and flushes."""
        self.send_event("honeypot.stopped", {})
        self.close()

    # Beyond the guide -------------------------------------------------------------------

    def flush(self, timeout: float = 1.0) -> bool:
        """Waits up to ``timeout`` seconds until every queued event was written."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._buffer or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.notify_all()
                self._condition.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float = 1.0) -> None:
        """Flushes (bounded by ``timeout``) and stops the background thread."""
        try:
            self.flush(timeout)
            with self._condition:
                self._closing = True
                self._condition.notify_all()
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
            self._disconnect()
        except Exception as error:
            self._log.warning("close", "honeybee: error while closing: %s", error)

    @property
    def pending(self) -> int:
        """Events queued and not yet written."""
        with self._condition:
            return len(self._buffer) + self._in_flight

    # Background sender --------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="honeybee-sender", daemon=True)
            self._thread.start()

    def _flush_at_exit(self) -> None:
        if self._buffer and not self._closing:
            self.flush(1.0)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._buffer and not self._closing:
                    self._condition.wait(1.0)
                if not self._buffer and self._closing:
                    return
                batch = list(self._buffer)
                self._buffer.clear()
                self._in_flight = len(batch)
            written = self._write(batch)
            with self._condition:
                self._in_flight = 0
                if written < len(batch):
                    # Put back what was not written, ahead of newer events, within the bound.
                    for line in reversed(batch[written:]):
                        if len(self._buffer) == self._buffer.maxlen:
                            self.dropped += 1
                            continue
                        self._buffer.appendleft(line)
                self.sent += written
                self._condition.notify_all()
                closing = self._closing
            if written < len(batch):
                if closing:
                    return
                self._sleep_before_retry()
            else:
                self._retry_delay = 0.1

    def _sleep_before_retry(self) -> None:
        # New events do not shorten the wait: a node that is down is not retried per event.
        deadline = time.monotonic() + self._retry_delay
        with self._condition:
            while not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
        self._retry_delay = min(self._retry_delay * 2, 5.0)

    def _write(self, batch: list) -> int:
        """Writes lines in order; returns how many were written completely."""
        written = 0
        try:
            sock = self._connected_socket()
            if sock is None:
                return 0
            for line in batch:
                sock.sendall(line)
                written += 1
        except (OSError, ValueError) as error:
            self._log.warning("send", "honeybee: sending to %s:%d failed: %s", self.host, self.port, error)
            self._disconnect()
        return written

    def _connected_socket(self) -> Optional[socket.socket]:
        sock = self._socket
        if sock is not None and self._peer_closed(sock):
            self._disconnect()
            sock = None
        if sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                sock.settimeout(self.timeout)
            except OSError as error:
                self._log.warning(
                    "connect", "honeybee: node at %s:%d unreachable: %s", self.host, self.port, error
                )
                return None
            self._socket = sock
        return sock

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        # The node never writes on this connection, so readable means closed (or reset).
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _disconnect(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
