"""HoneyBee output plugin for Cowrie.

Forwards every Cowrie event to the local HoneyBee Node through the HoneyBee Python kit
(``honeybee.HoneyBeeOutput``): ``eventid`` becomes the event type, Cowrie's timestamp is kept,
and the rest of the record becomes the event's data. The kit queues events and writes them
from its own thread, so Cowrie's reactor never waits on the network.

Install: put this file in Cowrie's ``cowrie/output/`` package directory and the kit in
Cowrie's environment (``integrations/cowrie/install.sh`` does both), then enable it in
``etc/cowrie.cfg``::

    [output_honeybee]
    enabled = true
    # port = 9100        (default: HONEYBEE_EVENT_PORT, else 9100)
    # pot_id = cowrie-01 (default: HONEYBEE_POT_ID, else Cowrie's sensor name)
"""

from __future__ import annotations

import os
from typing import Any

from honeybee import HoneyBeeOutput

import cowrie.core.output
from cowrie.core.config import CowrieConfig

SECTION = "output_honeybee"

# Twisted's own bookkeeping, not part of the event (Cowrie's jsonlog drops the same keys).
INTERNAL_KEYS = ("time", "system")


class Output(cowrie.core.output.Output):
    """Cowrie output engine ``honeybee``."""

    def start(self) -> None:
        port = CowrieConfig.getint(
            SECTION, "port", fallback=int(os.getenv("HONEYBEE_EVENT_PORT") or 9100)
        )
        pot_id = CowrieConfig.get(
            SECTION, "pot_id", fallback=os.getenv("HONEYBEE_POT_ID") or self.sensor
        )
        pot_type = CowrieConfig.get(
            SECTION, "pot_type", fallback=os.getenv("HONEYBEE_HONEYPOT_TYPE") or "cowrie"
        )
        self.client = HoneyBeeOutput(port=port, pot_id=pot_id, pot_type=pot_type)
        self.client.start()

    def stop(self) -> None:
        self.client.stop()

    def write(self, event: dict[str, Any]) -> None:
        # Other outputs receive the same dict: read it, never change it.
        record = {
            key: value
            for key, value in event.items()
            if not key.startswith("log_") and key not in INTERNAL_KEYS
        }
        event_type = record.pop("eventid", None)
        if not event_type:
            return
        timestamp = record.pop("timestamp", None)
        self.client.send_event(event_type, record, timestamp=timestamp)
