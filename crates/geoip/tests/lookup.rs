//! Lookups against the real bundled table and the generated test `.mmdb` files.

use std::net::IpAddr;
use std::path::PathBuf;

use honeybee_geoip::{CountryCode, GeoIp, GeoIpError, GeoIpPaths, Location};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn bundled_only() -> GeoIp {
    GeoIp::open(&GeoIpPaths::default()).expect("bundled table opens")
}

fn with_databases() -> GeoIp {
    GeoIp::open(&GeoIpPaths {
        city_db: Some(testdata("test-city.mmdb")),
        asn_db: Some(testdata("test-asn.mmdb")),
    })
    .expect("test databases open")
}

fn country(geoip: &GeoIp, address: &str) -> Option<String> {
    geoip
        .lookup_text(address)
        .country
        .map(|code| code.as_str().to_string())
}

/// Addresses whose country was read from the source CSV (DB-IP Lite 2026-06, the
/// `dbip-country-ipv4.csv` / `-ipv6.csv` line that holds each is noted).
#[test]
fn known_addresses_have_their_source_country() {
    let geoip = bundled_only();
    let known = [
        ("1.0.0.1", "AU"),           // 1.0.0.0,1.0.0.255,AU (first range)
        ("1.0.0.0", "AU"),           // its first address
        ("193.0.0.0", "NL"),         // 193.0.0.0,193.0.23.255,NL
        ("193.0.6.139", "NL"),       // inside it
        ("41.0.0.1", "ZA"),          // 41.0.0.0,41.31.255.255,ZA
        ("41.31.255.255", "ZA"),     // its last address
        ("77.88.55.88", "RU"),       // 77.88.50.0,77.88.62.1,RU
        ("200.160.2.3", "BR"),       // 200.150.252.0,200.162.143.255,BR
        ("6.0.0.1", "US"),           // 6.0.0.0,6.16.73.255,US
        ("2a00:1450:4001::1", "DE"), // 2a00:1450:4001::,...:ffff,DE
        ("2001:67c:2e8::1", "NL"),   // 2001:67c:2e8::,...,NL
        ("2400:cb00::", "US"),       // 2400:cb00::,2400:cb00:18:ffff:...,US
        ("2c0f:f000::1", "DZ"),      // 2c0f:f000::,2c0f:f000:ffff:...,DZ
        ("2a02:ff0::1", "TR"),       // 2a02:ff0::,2a02:ff7:ffff:...,TR
        // Three ranges inside one /64: the fine section of the table.
        ("2001:550:0:1000::9a18:1073", "US"), // last address of the US range before
        ("2001:550:0:1000::9a18:1074", "AU"), // 2001:550:0:1000::9a18:1074,...9a36:a553,AU
        ("2001:550:0:1000::9a36:a553", "AU"),
        ("2001:550:0:1000::9a36:a554", "US"), // the US range after
    ];
    for (address, expected) in known {
        assert_eq!(
            country(&geoip, address).as_deref(),
            Some(expected),
            "{address}"
        );
    }
}

/// Every sample the generator took from the source CSV (first and last address of every
/// 250th range, every gap, every range starting inside a /64) looks up to the source's
/// country: the table agrees with its source, not only with itself.
#[test]
fn bundled_table_agrees_with_its_source_samples() {
    let geoip = bundled_only();
    let samples = include_str!("../data/country-samples.txt");
    let mut checked = 0;
    for line in samples.lines() {
        let (address, expected) = line.split_once(' ').expect("sample line");
        let address: IpAddr = address.parse().expect("sample address");
        let found = geoip.lookup(address).country;
        if found.is_none() && expected != "--" {
            // Only a special-purpose address may lose the source's country.
            assert_eq!(
                geoip.lookup(address),
                Location::default(),
                "{address} should be {expected}"
            );
            continue;
        }
        let expected = (expected != "--").then(|| CountryCode::new(expected).expect("code"));
        assert_eq!(found, expected, "{address}");
        checked += 1;
    }
    assert!(checked > 5_000, "only {checked} samples checked");
}

#[test]
fn special_ranges_have_no_location() {
    let geoip = with_databases();
    let special = [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1", // in both test databases, still cut
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "192.0.0.1",
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.200",
        "198.18.0.1",
        "198.19.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "2001:db8::1",
        "2001:db8:ffff::1",
        "3fff::1",
        "2001:2::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:192.168.0.1",
        "::ffff:100.64.0.1",
        "::ffff:203.0.113.9",
        "::ffff:0.0.0.0",
    ];
    for address in special {
        let location = geoip.lookup_text(address);
        assert!(location.is_empty(), "{address}: {location:?}");
    }
}

#[test]
fn ipv4_mapped_public_address_is_looked_up_as_ipv4() {
    let geoip = with_databases();
    assert_eq!(
        geoip.lookup_text("::ffff:1.0.0.1"),
        geoip.lookup_text("1.0.0.1")
    );
    assert_eq!(
        country(&bundled_only(), "::ffff:193.0.6.139").as_deref(),
        Some("NL")
    );
}

#[test]
fn unparsable_text_gives_an_empty_location() {
    let geoip = with_databases();
    for text in [
        "",
        "not an address",
        "1.2.3",
        "1.2.3.4.5",
        "::g",
        "[1.0.0.1",
        "1.0.0.1:22",
    ] {
        assert_eq!(geoip.lookup_text(text), Location::default(), "{text:?}");
    }
    // Forms sockets and logs print are accepted.
    assert_eq!(
        country(&geoip, " [2a00:1450:4001::1] ").as_deref(),
        Some("DE")
    );
}

#[test]
fn city_and_asn_databases_add_their_fields() {
    let geoip = with_databases();
    assert_eq!(
        geoip.lookup_text("1.0.0.7"),
        Location {
            // The City database's country wins over the bundled table's AU.
            country: CountryCode::new("NZ"),
            city: Some("Testville".into()),
            asn: Some(64496),
            as_organization: Some("Test Org One".into()),
        }
    );
    assert_eq!(
        geoip.lookup_text("2a02:ff0:1::9"),
        Location {
            country: CountryCode::new("DE"),
            city: Some("Sixburg".into()),
            asn: Some(4_200_000_001),
            as_organization: Some("Test Org Six".into()),
        }
    );
    // City without a country: the bundled table's country stays (8.8.8.8 is US there).
    let no_country = geoip.lookup_text("8.8.8.8");
    assert_eq!(no_country.city.as_deref(), Some("Nocountry"));
    assert_eq!(no_country.country, CountryCode::new("US"));
    assert_eq!(no_country.asn, None);
    // Country without a city.
    let no_city = geoip.lookup_text("9.9.9.9");
    assert_eq!(no_city.country, CountryCode::new("CH"));
    assert_eq!(no_city.city, None);
    // Not in either database: the bundled country alone.
    assert_eq!(
        geoip.lookup_text("193.0.6.139"),
        Location {
            country: CountryCode::new("NL"),
            ..Location::default()
        }
    );
}

#[test]
fn ipv6_address_in_an_ipv4_only_database_leaves_the_field_empty() {
    let geoip = GeoIp::open(&GeoIpPaths {
        city_db: None,
        asn_db: Some(testdata("test-asn-ipv4-only.mmdb")),
    })
    .expect("ipv4-only database opens");
    assert_eq!(geoip.lookup_text("1.0.0.1").asn, Some(64498));
    let v6 = geoip.lookup_text("2a02:ff0::1");
    assert_eq!(v6.asn, None);
    assert_eq!(v6.country, CountryCode::new("TR"));
}

#[test]
fn missing_database_is_an_error_naming_the_file() {
    let missing = testdata("no-such-city.mmdb");
    let error = GeoIp::open(&GeoIpPaths {
        city_db: Some(missing.clone()),
        asn_db: None,
    })
    .expect_err("missing file");
    let text = error.to_string();
    assert!(matches!(error, GeoIpError::Database { kind: "city", .. }));
    assert!(text.starts_with("cannot open city database "), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(text.contains("no such file"), "{text}");
    let without_path = text.replace(&missing.display().to_string(), "");
    assert_eq!(
        without_path,
        without_path.to_lowercase(),
        "lowercase message"
    );
}

#[test]
fn corrupt_database_is_an_error_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("honeybee-geoip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Not a MaxMind DB at all, and a real one cut in half (its metadata is at the end).
    let garbage = dir.join("garbage.mmdb");
    std::fs::write(&garbage, b"this is not a maxmind database\n".repeat(100)).expect("write");
    let real = std::fs::read(testdata("test-asn.mmdb")).expect("read");
    let truncated = dir.join("truncated.mmdb");
    std::fs::write(&truncated, &real[..real.len() / 2]).expect("write");
    for path in [&garbage, &truncated] {
        let error = GeoIp::open(&GeoIpPaths {
            city_db: None,
            asn_db: Some(path.clone()),
        })
        .expect_err("corrupt file");
        let text = error.to_string();
        assert!(text.starts_with("cannot open asn database "), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("not a maxmind db file"), "{text}");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn lookups_never_panic_on_any_address() {
    // Walk both address spaces in coarse steps, plus the extremes: every lookup returns.
    let geoip = with_databases();
    let mut seen_country = 0;
    for high in 0..=u8::MAX {
        let v4 = IpAddr::from([high, 0x5a, 0xa5, 0x0f]);
        let v6 = IpAddr::V6(std::net::Ipv6Addr::from(
            (u128::from(high) << 120) | 0x0123_4567_89ab_cdef,
        ));
        for address in [v4, v6] {
            if geoip.lookup(address).country.is_some() {
                seen_country += 1;
            }
        }
    }
    for address in [
        "255.255.255.254",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::2",
    ] {
        let _ = geoip.lookup_text(address);
    }
    assert!(seen_country > 100, "{seen_country}");
}

#[test]
fn version_names_the_source() {
    let version = honeybee_geoip::COUNTRY_DATABASE_VERSION;
    assert!(
        version.starts_with("DB-IP IP to Country Lite "),
        "{version}"
    );
    assert_eq!(bundled_only().country_database_version(), version);
}
