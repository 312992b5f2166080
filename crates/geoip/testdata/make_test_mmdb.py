#!/usr/bin/env python3
"""Writes the small MaxMind-format databases the honeybee-geoip tests read.

Usage: make_test_mmdb.py OUT_DIR   (run by make-test-mmdb.sh, which installs mmdb-writer)

The records are made up for the tests, not real geolocation: each one is there for one
behaviour the tests check (noted beside it). Field names and types follow the GeoIP2
City and ASN layouts, which is what honeybee-geoip reads.
"""

import os
import sys

from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPSet


def city(name, country=None):
    record = {}
    if name is not None:
        record["city"] = {"names": {"en": name, "de": name + " (de)"}}
    if country is not None:
        record["country"] = {"iso_code": country, "names": {"en": country}}
    return record


def asn(number, organization):
    return {
        "autonomous_system_number": MmdbU32(number),
        "autonomous_system_organization": organization,
    }


def write(path, database_type, ip_version, records):
    writer = MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en"],
        description="HoneyBee test data (made up), crates/geoip/testdata",
    )
    for network, record in records:
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(path)


def main():
    out = sys.argv[1]
    write(
        os.path.join(out, "test-city.mmdb"),
        "HoneyBee-Test-City",
        6,
        [
            # City and a country that differs from the bundled table: the City db wins.
            ("1.0.0.0/24", city("Testville", "NZ")),
            # City without country: the bundled table's country stays.
            ("8.8.8.0/24", city("Nocountry")),
            # Country without city.
            ("9.9.9.0/24", city(None, "CH")),
            # IPv6.
            ("2a02:ff0::/32", city("Sixburg", "DE")),
            # A special-purpose range: must be cut before the database is asked.
            ("10.0.0.0/8", city("Private City", "US")),
        ],
    )
    write(
        os.path.join(out, "test-asn.mmdb"),
        "HoneyBee-Test-ASN",
        6,
        [
            ("1.0.0.0/24", asn(64496, "Test Org One")),
            ("2a02:ff0::/32", asn(4200000001, "Test Org Six")),
            ("10.0.0.0/8", asn(64497, "Private Org")),
        ],
    )
    # IPv4-only file: an IPv6 lookup in it must leave the ASN empty, not fail.
    write(
        os.path.join(out, "test-asn-ipv4-only.mmdb"),
        "HoneyBee-Test-ASN",
        4,
        [("1.0.0.0/24", asn(64498, "Test Org Four"))],
    )


if __name__ == "__main__":
    main()
