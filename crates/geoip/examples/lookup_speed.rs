//! What a country lookup costs: `GeoIp::lookup` over 1M random IPv4 and 1M random IPv6
//! addresses, next to a `HashMap<u32, u8>` probe of the same IPv4 keys as a yardstick.
//!
//!     cargo run --release -p honeybee-geoip --example lookup_speed
//!
//! Random addresses spread over the whole table, so most lookups miss the CPU caches: this
//! is the pessimistic figure (real traffic repeats addresses and is cheaper). Each figure
//! is the best of three rounds, since a shared machine makes single rounds noisy.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use honeybee_geoip::{GeoIp, GeoIpPaths};

const COUNT: usize = 1_000_000;

/// xorshift64*: reproducible addresses without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The fastest of three timed runs of `round`, in seconds.
fn best_of_three(mut round: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            round();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn rate(label: &str, seconds: f64) -> f64 {
    let per_second = COUNT as f64 / seconds;
    println!(
        "{label:<34} {:>7.1} M lookups/s  {:>6.1} ns/lookup",
        per_second / 1e6,
        seconds * 1e9 / COUNT as f64
    );
    per_second
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opened = Instant::now();
    let geoip = GeoIp::open(&GeoIpPaths::default())?;
    println!(
        "open (checks the bundled table): {:.1} ms",
        opened.elapsed().as_secs_f64() * 1e3
    );

    let mut rates = Vec::new();
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let v4: Vec<IpAddr> = (0..COUNT)
        .map(|_| IpAddr::V4(Ipv4Addr::from(random.next() as u32)))
        .collect();
    // Global unicast (2000::/3) where the IPv6 data is; elsewhere a lookup is cut early.
    let v6: Vec<IpAddr> = (0..COUNT)
        .map(|_| {
            let bits = (u128::from(random.next()) << 64) | u128::from(random.next());
            IpAddr::V6(Ipv6Addr::from((bits >> 3) | (1 << 125)))
        })
        .collect();

    for (label, addresses) in [
        ("GeoIp::lookup, random IPv4", &v4),
        ("GeoIp::lookup, random IPv6 2000::/3", &v6),
    ] {
        let mut found = 0usize;
        let seconds = best_of_three(|| {
            found = 0;
            for &address in addresses {
                found += usize::from(
                    black_box(geoip.lookup(black_box(address)))
                        .country
                        .is_some(),
                );
            }
        });
        rates.push(rate(label, seconds));
        println!("  {found} of {COUNT} had a country");
    }

    // Yardstick: one HashMap probe per address, the map about the table's IPv4 size.
    let map: HashMap<u32, u8> = (0..355_814u32)
        .map(|i| (i.wrapping_mul(12_073), (i % 250) as u8))
        .collect();
    let keys: Vec<u32> = v4
        .iter()
        .map(|address| match address {
            IpAddr::V4(v4) => u32::from(*v4),
            IpAddr::V6(_) => 0,
        })
        .collect();
    let seconds = best_of_three(|| {
        let mut hits = 0usize;
        for &key in &keys {
            hits += usize::from(black_box(&map).get(&black_box(key)).is_some());
        }
        black_box(hits);
    });
    let map_rate = rate("HashMap<u32, u8>::get (yardstick)", seconds);
    println!(
        "IPv4 lookup costs {:.1}x a HashMap probe",
        map_rate / rates[0]
    );
    Ok(())
}
