//! The bundled country table (`data/country.bin`): range starts and a one-byte country index,
//! read in place from the bytes compiled into the binary.
//!
//! The layout is written by `data/build_country_table.py`, whose header describes it. Each
//! section covers its whole address space from 0, so the country of an address is the entry
//! of the last start at or below it: one binary search, no allocation, no decoding. The
//! bytes are read where they are (big-endian, any alignment) rather than copied into typed
//! vectors; the only heap is a 2 x 256 KiB slice index, built with a one-off check of the
//! table the first time a `GeoIp` is opened (about 12 ms in a release build).

use std::sync::OnceLock;

use crate::CountryCode;

/// The table as compiled in. Regenerate with `data/build-country-table.sh`.
static COUNTRY_BIN: &[u8] = include_bytes!("../data/country.bin");

/// Index meaning "the data has no country for this range".
const NO_COUNTRY: u8 = 0;
/// Index in the IPv6 /64 section meaning "this /64 is split: ask the fine section".
const SEE_FINE: u8 = 255;

/// One section: `count` big-endian starts of `W` bytes, then `count` country indices.
#[derive(Debug, Clone, Copy)]
struct Section<const W: usize> {
    starts: &'static [u8],
    codes: &'static [u8],
}

impl<const W: usize> Section<W> {
    fn len(&self) -> usize {
        self.codes.len()
    }

    /// The start of entry `i`. Lengths are checked when the table is opened, so the
    /// fallback never shows; it is there so a lookup cannot panic whatever the bytes.
    #[inline]
    fn start(&self, i: usize) -> u128 {
        match self.starts.get(i * W..i * W + W) {
            Some(bytes) => {
                let mut wide = [0u8; 16];
                wide[16 - W..].copy_from_slice(bytes);
                u128::from_be_bytes(wide)
            }
            None => u128::MAX,
        }
    }

    /// The index of the entry holding `key`: the last one whose start is `<= key`, or
    /// entry 0 when every start is above it (never, where the section starts at 0).
    fn index_at(&self, key: u128) -> usize {
        self.index_between(key, 0, self.len())
    }

    /// [`index_at`](Self::index_at) searching only entries `from..to`, which the caller
    /// knows hold `key` (the first one starts at or below it).
    ///
    /// Written as a fixed-trip-count halving loop (rather than `partition_point` over a
    /// closure with an early exit) so the compiler can make the step a conditional move.
    #[inline]
    fn index_between(&self, key: u128, from: usize, to: usize) -> usize {
        let mut base = from;
        let mut size = to.saturating_sub(from);
        while size > 1 {
            let half = size / 2;
            let mid = base + half;
            if self.start(mid) <= key {
                base = mid;
            }
            size -= half;
        }
        base
    }

    fn code(&self, index: usize) -> u8 {
        self.codes.get(index).copied().unwrap_or(NO_COUNTRY)
    }

    fn code_at(&self, key: u128) -> u8 {
        self.code(self.index_at(key))
    }
}

/// The first entry of each of the 65,536 slices of a section's key space (keyed by the top
/// 16 bits), so a lookup binary-searches a few entries of its slice instead of the whole
/// section. Random lookups over the whole table were dominated by cache misses in the
/// first steps of the search (185 ns per IPv4 lookup without it, `examples/lookup_speed`).
/// Built once when the table is opened: 256 KiB per section, no allocation per lookup.
#[derive(Debug, Clone)]
struct SliceIndex {
    /// How far to shift a key to get its slice number.
    shift: u32,
    /// `first[s]` is the entry holding the first key of slice `s`; `first[65536]` is the
    /// section's length.
    first: Vec<u32>,
}

impl SliceIndex {
    const SLICES: usize = 1 << 16;

    fn new<const W: usize>(section: &Section<W>) -> Result<SliceIndex, String> {
        let key_bits = (W * 8) as u32;
        let shift = key_bits - 16;
        let mut first = Vec::with_capacity(Self::SLICES + 1);
        for slice in 0..Self::SLICES as u128 {
            let index = section.index_at(slice << shift);
            first.push(u32::try_from(index).map_err(|_| "country table is too large")?);
        }
        first.push(u32::try_from(section.len()).map_err(|_| "country table is too large")?);
        Ok(SliceIndex { shift, first })
    }

    /// The code for `key`, searching only its slice (and the entry reaching into it).
    #[inline]
    fn code_at<const W: usize>(&self, section: &Section<W>, key: u128) -> u8 {
        let slice = (key >> self.shift) as usize;
        let from = self.first.get(slice).map_or(0, |&i| i as usize);
        // The entry holding the slice's last key is at most the next slice's first entry.
        let to = self
            .first
            .get(slice + 1)
            .map_or(section.len(), |&i| (i as usize + 1).min(section.len()));
        section.code(section.index_between(key, from, to))
    }
}

/// The parsed view of `country.bin`.
#[derive(Debug, Clone)]
pub(crate) struct CountryTable {
    version: &'static str,
    /// Two ASCII bytes per country; index `i` (1-based) names `countries[2(i-1)..2i]`.
    countries: &'static [u8],
    v4: Section<4>,
    v4_index: SliceIndex,
    v6: Section<8>,
    v6_index: SliceIndex,
    v6_fine: Section<16>,
}

impl CountryTable {
    /// The table compiled into this binary, checked and indexed once per process (every
    /// `GeoIp` shares it). An error here means the committed `country.bin` is broken (a bad
    /// regeneration), not anything about the host.
    pub(crate) fn bundled() -> Result<&'static CountryTable, String> {
        static BUNDLED: OnceLock<Result<CountryTable, String>> = OnceLock::new();
        BUNDLED
            .get_or_init(|| Self::parse(COUNTRY_BIN))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn parse(bytes: &'static [u8]) -> Result<CountryTable, String> {
        let mut cursor = Cursor { bytes, at: 0 };
        if cursor.take(4)? != b"HBCC" {
            return Err("not a country table (bad magic)".into());
        }
        let format = cursor.byte()?;
        if format != 1 {
            return Err(format!("country table format {format} is not supported"));
        }
        let version_len = usize::from(cursor.byte()?);
        let version = std::str::from_utf8(cursor.take(version_len)?)
            .map_err(|_| "country table version is not utf-8".to_string())?;
        let country_count = cursor.byte()?;
        let countries = cursor.take(usize::from(country_count) * 2)?;
        if !countries.iter().all(u8::is_ascii_uppercase) {
            return Err("country table has a code that is not two letters a-z".into());
        }
        let v4 = cursor.section::<4>()?;
        let v6 = cursor.section::<8>()?;
        let v6_fine = cursor.section::<16>()?;
        if cursor.at != bytes.len() {
            return Err("country table has trailing bytes".into());
        }
        check(&v4, country_count, false)?;
        check(&v6, country_count, true)?;
        check(&v6_fine, country_count, false)?;
        let table = CountryTable {
            version,
            countries,
            v4,
            v4_index: SliceIndex::new(&v4)?,
            v6,
            v6_index: SliceIndex::new(&v6)?,
            v6_fine,
        };
        table.check_split_blocks()?;
        Ok(table)
    }

    /// Each /64 marked "see fine" is one /64 (the next entry starts right after it), and
    /// the fine section has an entry at its first address, so a fine lookup never falls
    /// back onto the previous block's last range.
    fn check_split_blocks(&self) -> Result<(), String> {
        for i in 0..self.v6.len() {
            if self.v6.codes.get(i) != Some(&SEE_FINE) {
                continue;
            }
            let block = self.v6.start(i);
            let next = if i + 1 < self.v6.len() {
                self.v6.start(i + 1)
            } else {
                1 << 64
            };
            let base = block << 64;
            let in_fine = self.v6_fine.start(self.v6_fine.index_at(base)) == base;
            if next != block + 1 || !in_fine {
                return Err(format!(
                    "country table split block {block:#x} is not in the fine section"
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn version(&self) -> &'static str {
        self.version
    }

    pub(crate) fn lookup_v4(&self, address: u32) -> Option<CountryCode> {
        self.country(self.v4_index.code_at(&self.v4, u128::from(address)))
    }

    pub(crate) fn lookup_v6(&self, address: u128) -> Option<CountryCode> {
        let code = match self.v6_index.code_at(&self.v6, address >> 64) {
            SEE_FINE => self.v6_fine.code_at(address),
            code => code,
        };
        self.country(code)
    }

    fn country(&self, index: u8) -> Option<CountryCode> {
        let at = usize::from(index.checked_sub(1)?) * 2;
        let pair = self.countries.get(at..at + 2)?;
        Some(CountryCode([pair[0], pair[1]]))
    }

    /// How many entries each section has (IPv4, IPv6 /64, IPv6 fine).
    #[cfg(test)]
    fn entry_counts(&self) -> (usize, usize, usize) {
        (self.v4.len(), self.v6.len(), self.v6_fine.len())
    }
}

/// The invariants the binary search relies on: the first entry starts at 0, starts
/// strictly increase, and every index names a country (or is one of the markers).
fn check<const W: usize>(
    section: &Section<W>,
    country_count: u8,
    is_v6_coarse: bool,
) -> Result<(), String> {
    // The fine section only answers for split /64s, so it need not start at 0.
    let covers_all = W != 16;
    if covers_all && section.len() > 0 && section.start(0) != 0 {
        return Err("country table section does not start at address 0".into());
    }
    for i in 1..section.len() {
        if section.start(i) <= section.start(i - 1) {
            return Err(format!("country table starts out of order at entry {i}"));
        }
    }
    let bad_code = section
        .codes
        .iter()
        .any(|&code| code > country_count && !(is_v6_coarse && code == SEE_FINE));
    if bad_code {
        return Err("country table has an index past its country list".into());
    }
    Ok(())
}

/// Reads the table front to back; every read is bounds-checked into an error.
struct Cursor {
    bytes: &'static [u8],
    at: usize,
}

impl Cursor {
    fn take(&mut self, len: usize) -> Result<&'static [u8], String> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| "country table is truncated".to_string())?;
        let bytes = self.bytes;
        let slice = &bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn section<const W: usize>(&mut self) -> Result<Section<W>, String> {
        let count_bytes: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| "country table is truncated".to_string())?;
        let count = u32::from_be_bytes(count_bytes) as usize;
        let width = count
            .checked_mul(W)
            .ok_or_else(|| "country table section is too large".to_string())?;
        let starts = self.take(width)?;
        let codes = self.take(count)?;
        Ok(Section { starts, codes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_table_parses_and_is_consistent() {
        let table = CountryTable::bundled().expect("bundled table");
        let (v4, v6, fine) = table.entry_counts();
        assert!(v4 > 100_000, "IPv4 entries: {v4}");
        assert!(v6 > 100_000, "IPv6 entries: {v6}");
        assert!(fine > 0, "IPv6 fine entries: {fine}");
        assert_eq!(table.version(), crate::COUNTRY_DATABASE_VERSION);
    }

    #[test]
    fn slice_index_finds_what_a_full_search_finds() {
        let table = CountryTable::bundled().expect("bundled table");
        // xorshift: spread keys, plus every range start and its predecessor for IPv4.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v4 = u128::from(state as u32);
            let v6 = u128::from(state);
            assert_eq!(table.v4_index.code_at(&table.v4, v4), table.v4.code_at(v4));
            assert_eq!(table.v6_index.code_at(&table.v6, v6), table.v6.code_at(v6));
        }
        for i in 0..table.v4.len() {
            let start = table.v4.start(i);
            for key in [start, start.saturating_sub(1)] {
                assert_eq!(
                    table.v4_index.code_at(&table.v4, key),
                    table.v4.code_at(key)
                );
            }
        }
    }

    #[test]
    fn damaged_tables_are_refused() {
        assert!(CountryTable::parse(b"").is_err());
        assert!(CountryTable::parse(b"HBCX\x01").is_err());
        assert!(CountryTable::parse(b"HBCC\x02").is_err());
        // Truncated inside the IPv4 section.
        let cut: &'static [u8] = &COUNTRY_BIN[..COUNTRY_BIN.len() / 2];
        assert!(CountryTable::parse(cut).is_err());
        // A minimal valid table, then the same with an out-of-range index.
        let good: &'static [u8] = b"HBCC\x01\x01v\x01BE\
            \x00\x00\x00\x01\x00\x00\x00\x00\x01\
            \x00\x00\x00\x00\
            \x00\x00\x00\x00";
        let table = CountryTable::parse(good).expect("minimal table");
        assert_eq!(
            table.lookup_v4(7).map(|c| c.as_str().to_string()),
            Some("BE".into())
        );
        assert_eq!(table.lookup_v6(7), None);
        let bad: &'static [u8] = b"HBCC\x01\x01v\x01BE\
            \x00\x00\x00\x01\x00\x00\x00\x00\x02\
            \x00\x00\x00\x00\
            \x00\x00\x00\x00";
        assert!(CountryTable::parse(bad).is_err());
    }
}
