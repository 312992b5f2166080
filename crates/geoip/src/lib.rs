//! Offline enrichment of an attacker's address: country, and city and ASN when the operator
//! configures MaxMind-format databases.
//!
//! No network at run time. The country comes from a table compiled into the binary
//! (DB-IP's "IP to Country Lite", CC BY 4.0: see `data/README.md` and
//! [`COUNTRY_DATABASE_ATTRIBUTION`]), looked up with one binary search and no allocation.
//! City and ASN need data too large and too often updated to ship, so they come from
//! `.mmdb` files the operator points at (`[geoip] city_db`, `asn_db`): GeoLite2 / GeoIP2 City
//! and ASN, DB-IP Lite City and ASN in MMDB form, or anything with the same fields.
//!
//! Special-purpose addresses (private, loopback, link-local, CGNAT, documentation,
//! benchmarking, multicast, reserved) get an empty [`Location`] whatever the databases say:
//! they are not anybody's location.
//!
//! ```
//! use honeybee_geoip::{GeoIp, GeoIpPaths};
//!
//! let geoip = GeoIp::open(&GeoIpPaths::default())?; // bundled country table only
//! let location = geoip.lookup_text("193.0.6.139");
//! assert_eq!(location.country.map(|code| code.to_string()).as_deref(), Some("NL"));
//! assert!(geoip.lookup_text("192.168.1.1").is_empty());
//! # Ok::<(), honeybee_geoip::GeoIpError>(())
//! ```

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{geoip2, path, MaxMindDbError, Reader};

mod special;
mod table;

use table::CountryTable;

/// Which release of the bundled country data is compiled in (source, date, npm version),
/// for `--version` output, statistics and the attribution page.
pub const COUNTRY_DATABASE_VERSION: &str = include_str!("../data/country-version.txt");

/// The attribution the bundled country data's licence (CC BY 4.0) asks for. Anything that
/// shows countries to a person (a web page, a report) shows this line with the link.
pub const COUNTRY_DATABASE_ATTRIBUTION: &str =
    "IP Geolocation by DB-IP (https://db-ip.com), licensed under CC BY 4.0";

/// Where the optional MaxMind-format databases are (`[geoip] city_db`, `asn_db`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoIpPaths {
    /// A City database (GeoLite2-City, GeoIP2-City, DB-IP City Lite `.mmdb`): city name
    /// and a country that takes precedence over the bundled table.
    pub city_db: Option<PathBuf>,
    /// An ASN database (GeoLite2-ASN, DB-IP ASN Lite `.mmdb`): AS number and organisation.
    pub asn_db: Option<PathBuf>,
}

/// Why [`GeoIp::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// A configured `.mmdb` file could not be read or is not a MaxMind DB.
    #[error("cannot open {kind} database {}: {reason}", path.display())]
    Database {
        /// `city` or `asn`, as in the configuration key.
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The country table compiled into this binary is damaged (a bad regeneration).
    #[error("bundled country table is damaged: {0}")]
    BundledTable(String),
}

/// A two-letter ISO 3166-1 alpha-2 country code, upper case, kept inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code from text: two ASCII letters, any case (stored upper case).
    pub fn new(text: &str) -> Option<CountryCode> {
        match text.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => None,
        }
    }

    /// The code as text, e.g. `"DE"`.
    pub fn as_str(&self) -> &str {
        // Both constructors only admit ASCII letters, so this never takes the fallback.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

/// What is known about an address. Every field is optional: the bundled table has gaps,
/// and city and ASN need their databases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// Country: the City database's where it has one, else the bundled table's.
    pub country: Option<CountryCode>,
    /// City name in English.
    pub city: Option<String>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// The autonomous system's organisation.
    pub as_organization: Option<String>,
}

impl Location {
    /// Nothing is known (a special-purpose address, or one no database covers).
    pub fn is_empty(&self) -> bool {
        self == &Location::default()
    }
}

/// The lookup service: the bundled country table plus the optional databases, read into
/// memory once. `Send + Sync` and read-only, so one `Arc<GeoIp>` serves every task.
pub struct GeoIp {
    countries: &'static CountryTable,
    city: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoIp")
            .field("country_database", &self.countries.version())
            .field(
                "city_db",
                &self.city.as_ref().map(|r| &r.metadata().database_type),
            )
            .field(
                "asn_db",
                &self.asn.as_ref().map(|r| &r.metadata().database_type),
            )
            .finish()
    }
}

impl GeoIp {
    /// The bundled country table, and the databases `paths` names. A configured file that
    /// is missing or is not a MaxMind DB is an error naming it: an operator who configured
    /// one wants to know at start-up, not find empty cities later.
    pub fn open(paths: &GeoIpPaths) -> Result<GeoIp, GeoIpError> {
        let countries = CountryTable::bundled().map_err(GeoIpError::BundledTable)?;
        let city = paths
            .city_db
            .as_deref()
            .map(|path| open_mmdb("city", path))
            .transpose()?;
        let asn = paths
            .asn_db
            .as_deref()
            .map(|path| open_mmdb("asn", path))
            .transpose()?;
        Ok(GeoIp {
            countries,
            city,
            asn,
        })
    }

    /// Which release of the bundled country data answers (same as
    /// [`COUNTRY_DATABASE_VERSION`]).
    pub fn country_database_version(&self) -> &'static str {
        self.countries.version()
    }

    /// Everything known about `address`; empty for special-purpose addresses. Never fails:
    /// a database that cannot answer for one address (an IPv6 address in an IPv4-only file,
    /// a damaged record) leaves its fields empty.
    pub fn lookup(&self, address: IpAddr) -> Location {
        let Some(address) = special::public_address(address) else {
            return Location::default();
        };
        let mut location = Location {
            country: self.bundled_country(address),
            ..Location::default()
        };
        if let Some(city) = &self.city {
            if let Ok(found) = city.lookup(address) {
                location.city = found
                    .decode_path::<String>(&path!["city", "names", "en"])
                    .ok()
                    .flatten()
                    .filter(|name| !name.is_empty());
                // The operator's City database is usually the newer and finer source, so its
                // country wins where it has one; the bundled table fills the rest.
                let city_country = found
                    .decode_path::<&str>(&path!["country", "iso_code"])
                    .ok()
                    .flatten()
                    .and_then(CountryCode::new);
                if city_country.is_some() {
                    location.country = city_country;
                }
            }
        }
        if let Some(asn) = &self.asn {
            if let Ok(Some(record)) = asn.lookup(address).and_then(|r| r.decode::<geoip2::Asn>()) {
                location.asn = record.autonomous_system_number;
                location.as_organization = record
                    .autonomous_system_organization
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned);
            }
        }
        location
    }

    /// [`lookup`](Self::lookup) of an address as text (as events carry it); text that is
    /// not an address gives an empty [`Location`]. A `[v6]` bracketed form and an IPv6
    /// zone (`fe80::1%eth0`) are accepted, since sockets and logs print them.
    pub fn lookup_text(&self, address: &str) -> Location {
        let trimmed = address.trim();
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(trimmed);
        let without_zone = unbracketed.split('%').next().unwrap_or(unbracketed);
        match without_zone.parse::<IpAddr>() {
            Ok(parsed) => self.lookup(parsed),
            Err(_) => Location::default(),
        }
    }

    /// The bundled table's country alone; the caller has already cut special addresses.
    fn bundled_country(&self, address: IpAddr) -> Option<CountryCode> {
        match address {
            IpAddr::V4(v4) => self.countries.lookup_v4(u32::from(v4)),
            IpAddr::V6(v6) => self.countries.lookup_v6(u128::from(v6)),
        }
    }
}

fn open_mmdb(kind: &'static str, path: &Path) -> Result<Reader<Vec<u8>>, GeoIpError> {
    let error = |reason: String| GeoIpError::Database {
        kind,
        path: path.to_path_buf(),
        reason,
    };
    Reader::open_readfile(path).map_err(|e| match e {
        MaxMindDbError::Io(io) => error(io.to_string().to_lowercase()),
        other => error(format!(
            "not a maxmind db file ({})",
            other.to_string().to_lowercase()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_code_text() {
        let code = CountryCode::new("de").expect("code");
        assert_eq!(code.as_str(), "DE");
        assert_eq!(code.to_string(), "DE");
        assert_eq!(CountryCode::new("D"), None);
        assert_eq!(CountryCode::new("DEU"), None);
        assert_eq!(CountryCode::new("D1"), None);
        assert_eq!(CountryCode::new("Ä"), None);
    }

    #[test]
    fn geoip_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GeoIp>();
    }
}
