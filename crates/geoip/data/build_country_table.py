#!/usr/bin/env python3
"""Writes country.bin, the bundled country table of honeybee-geoip, from DB-IP Lite CSV files.

Usage: build_country_table.py IPV4_NUM_CSV IPV6_NUM_CSV VERSION_TEXT OUT_FILE SAMPLES_FILE

SAMPLES_FILE gets addresses with the country the source CSV gives them (`--` for none):
the first and last address of every 250th range, every gap, and every range that starts
inside a /64. The crate's tests look each one up in OUT_FILE, which checks the table
against the source rather than against itself.

The input is the `*-num.csv` pair of the npm package @ip-location-db/dbip-country: one
inclusive range a line, `first,last,CC`, addresses as decimal integers. The output layout
(all integers big-endian) is read by crates/geoip/src/table.rs:

    magic      b"HBCC"
    format     u8 = 1
    version    u8 length, then that many UTF-8 bytes (COUNTRY_DATABASE_VERSION)
    countries  u8 count N, then N two-byte ASCII codes; code index i + 1 names country i,
               index 0 means "no country" (a gap in the data), 255 "look in the fine table"
    ipv4       u32 count, count x u32 range starts, count x u8 code index
    ipv6       u32 count, count x u64 range starts (the upper 64 bits: a /64 prefix),
               count x u8 code index
    ipv6 fine  u32 count, count x u128 range starts, count x u8 code index; for every
               /64 marked 255 it lists the start of that /64 and each boundary inside it

Every table covers its whole address space from 0: entry i holds for the addresses from its
start up to the next entry's start. A lookup is therefore one binary search for the last
start <= address. Adjacent ranges of one country are merged, gaps become index 0.

IPv6 starts are stored as /64 prefixes because almost every boundary in the data is one;
the few /64 blocks that hold a boundary inside them (a few hundred) are marked 255 in the
/64 table and listed with full 128-bit starts in the fine table, which keeps the table
exact without paying 16 bytes for every IPv6 range.
"""

import bisect
import csv
import ipaddress
import struct
import sys

FINE = 255


def read_ranges(path, bits):
    rows = []
    with open(path, newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            first, last, code = int(row[0]), int(row[1]), row[2].strip()
            if not (0 <= first <= last < 1 << bits):
                sys.exit(f"{path}:{line_no}: range out of order or out of bounds")
            if len(code) != 2 or not code.isascii() or not code.isupper():
                sys.exit(f"{path}:{line_no}: country code {code!r} is not two letters A-Z")
            rows.append((first, last, code))
    rows.sort()
    return rows


def covering_entries(rows, bits):
    """Sorted (start, code or None) covering 0..2^bits, merged, gaps as None."""
    entries = []
    next_free = 0
    for first, last, code in rows:
        if first < next_free:
            sys.exit(f"overlapping ranges at {first}")
        if first > next_free:
            entries.append((next_free, None))
        entries.append((first, code))
        next_free = last + 1
    if next_free < 1 << bits:
        entries.append((next_free, None))
    merged = []
    for start, code in entries:
        if merged and merged[-1][1] == code:
            continue
        merged.append((start, code))
    if not merged or merged[0][0] != 0:
        merged.insert(0, (0, None))
    return merged


def write_samples(path, v4_rows, v6_rows):
    lines = []
    for rows, make in ((v4_rows, ipaddress.IPv4Address), (v6_rows, ipaddress.IPv6Address)):
        picked = set()
        for i, (first, last, code) in enumerate(rows):
            inside_64 = make is ipaddress.IPv6Address and first & ((1 << 64) - 1)
            if i % 250 == 0 or inside_64:
                picked.add((first, code))
                picked.add((last, code))
            # A gap before this range (or after the previous one) has no country.
            if i > 0 and rows[i - 1][1] + 1 < first:
                picked.add((rows[i - 1][1] + 1, None))
                picked.add((first - 1, None))
        for address, code in sorted(picked):
            lines.append(f"{make(address)} {code or '--'}\n")
    with open(path, "w") as f:
        f.writelines(lines)


def main():
    v4_csv, v6_csv, version, out_path, samples_path = sys.argv[1:6]
    v4_rows = read_ranges(v4_csv, 32)
    v6_rows = read_ranges(v6_csv, 128)
    v4 = covering_entries(v4_rows, 32)
    v6 = covering_entries(v6_rows, 128)

    codes = sorted({c for _, c in v4 + v6 if c is not None})
    if len(codes) > 253:
        sys.exit("too many countries for a one-byte index")
    index = {c: i + 1 for i, c in enumerate(codes)}
    index[None] = 0

    # IPv6: split into the /64 table and the fine table.
    v6_starts = [s for s, _ in v6]

    def code_at(address):
        return v6[bisect.bisect_right(v6_starts, address) - 1][1]

    split_blocks = sorted({s >> 64 for s, _ in v6 if s & ((1 << 64) - 1)})
    split_set = set(split_blocks)
    points = {s >> 64 for s, _ in v6 if not s & ((1 << 64) - 1)}
    points.update(split_blocks)
    points.update(p + 1 for p in split_blocks if p + 1 < 1 << 64)
    coarse = []
    for p in sorted(points):
        value = FINE if p in split_set else index[code_at(p << 64)]
        # A split /64 keeps an entry of its own (never merged with a split neighbour), so
        # the reader can check that each one has its base in the fine table.
        if coarse and coarse[-1][1] == value and value != FINE:
            continue
        coarse.append((p, value))
    fine = []
    for p in split_blocks:
        base = p << 64
        fine.append((base, index[code_at(base)]))
        lo = bisect.bisect_right(v6_starts, base)
        hi = bisect.bisect_left(v6_starts, (p + 1) << 64)
        for s, c in v6[lo:hi]:
            fine.append((s, index[c]))

    out = bytearray(b"HBCC")
    out += bytes([1])
    version_bytes = version.encode()
    out += bytes([len(version_bytes)]) + version_bytes
    out += bytes([len(codes)]) + b"".join(c.encode() for c in codes)
    out += struct.pack(">I", len(v4))
    out += b"".join(struct.pack(">I", s) for s, _ in v4)
    out += bytes(index[c] for _, c in v4)
    out += struct.pack(">I", len(coarse))
    out += b"".join(struct.pack(">Q", s) for s, _ in coarse)
    out += bytes(v for _, v in coarse)
    out += struct.pack(">I", len(fine))
    out += b"".join(s.to_bytes(16, "big") for s, _ in fine)
    out += bytes(v for _, v in fine)
    with open(out_path, "wb") as f:
        f.write(out)
    write_samples(samples_path, v4_rows, v6_rows)
    print(
        f"{out_path}: {len(out)} bytes, {len(codes)} countries, {len(v4)} IPv4 entries, "
        f"{len(coarse)} IPv6 /64 entries, {len(fine)} IPv6 fine entries"
    )


if __name__ == "__main__":
    main()
