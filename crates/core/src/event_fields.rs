//! The well-known fields of an event, taken at ingest from the top level of its payload
//! (without building the payload into a map), and the location of its source address
//! (offline GeoIP), for the store's columns, filters and statistics.

use honeybee_geoip::GeoIp;
use honeybee_protocol::JsonObject;
use honeybee_store::{EventFields, SOURCE_ADDRESS_KEYS};

/// Fills an event's fields at ingest: what its payload names, and where its source is.
pub(crate) struct EventEnricher {
    pub geoip: GeoIp,
}

impl EventEnricher {
    pub fn fields(&self, data: &JsonObject) -> EventFields {
        let mut fields = well_known_fields(data);
        self.locate(&mut fields);
        fields
    }

    /// The fields of a payload given as text (events moved from an earlier store).
    pub fn fields_of_text(&self, text: &str) -> EventFields {
        let mut fields = well_known_fields_of_text(text);
        self.locate(&mut fields);
        fields
    }

    /// Country, city and AS of the source address; private, loopback and documentation
    /// addresses have none.
    fn locate(&self, fields: &mut EventFields) {
        let Some(address) = &fields.src_ip else {
            return;
        };
        let location = self.geoip.lookup_text(address);
        fields.country = location.country.map(|country| country.as_str().to_owned());
        fields.city = location.city;
        fields.asn = location.asn;
    }
}

/// Where each field is found: the first of its keys holding a string or number. Cowrie
/// names most of them; `command`, `sha256` and `ip` are what other honeypots write.
const FIELD_KEYS: [&[&str]; 10] = [
    &SOURCE_ADDRESS_KEYS,
    &["src_port"],
    &["dst_port"],
    &["username"],
    &["password"],
    &["input", "command"],
    &["session"],
    &["url"],
    &["shasum", "sha256"],
    &["protocol"],
];

/// The fields of one payload. A port that is not a number from 0 to 65535 is left out.
fn well_known_fields(data: &JsonObject) -> EventFields {
    let [src_ip, src_port, dst_port, username, password, command, session, url, file_hash, protocol]: [Option<String>; 10] =
        data.top_level_texts(&FIELD_KEYS)
            .try_into()
            .unwrap_or_default();
    let port = |text: Option<String>| text.and_then(|text| text.parse::<u16>().ok());
    EventFields {
        src_ip,
        src_port: port(src_port),
        dst_port: port(dst_port),
        username,
        password,
        command,
        session,
        url,
        file_hash,
        protocol,
        ..EventFields::default()
    }
}

/// The fields of a payload given as text; text that is not a JSON object has none.
fn well_known_fields_of_text(text: &str) -> EventFields {
    serde_json::value::RawValue::from_string(text.to_owned())
        .ok()
        .and_then(|raw| JsonObject::from_raw(raw).ok())
        .map(|object| well_known_fields(&object))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cowrie_fields_are_found_and_bad_ports_left_out() {
        let fields = well_known_fields_of_text(
            r#"{"eventid":"cowrie.command.input","src_ip":"203.0.113.5","src_port":51234,
                "dst_port":"99999","session":"a1b2","input":"uname -a","protocol":"ssh",
                "username":"root","password":"123456","shasum":"ab12","url":"http://x/y"}"#,
        );
        assert_eq!(
            fields,
            EventFields {
                src_ip: Some("203.0.113.5".into()),
                src_port: Some(51234),
                dst_port: None,
                username: Some("root".into()),
                password: Some("123456".into()),
                command: Some("uname -a".into()),
                session: Some("a1b2".into()),
                url: Some("http://x/y".into()),
                file_hash: Some("ab12".into()),
                protocol: Some("ssh".into()),
                ..EventFields::default()
            }
        );
        let other =
            well_known_fields_of_text(r#"{"ip":"198.51.100.1","command":"id","sha256":"ff"}"#);
        assert_eq!(other.src_ip.as_deref(), Some("198.51.100.1"));
        assert_eq!(other.command.as_deref(), Some("id"));
        assert_eq!(other.file_hash.as_deref(), Some("ff"));
        assert_eq!(well_known_fields_of_text("[1,2]"), EventFields::default());
    }

    #[test]
    fn a_public_source_gets_its_country_and_a_documentation_address_none() {
        let enricher = EventEnricher {
            geoip: GeoIp::open(&Default::default()).unwrap(),
        };
        // Tested against the built-in table's own rows by the geoip crate; here only that
        // ingest asks it.
        let public = enricher.fields_of_text(r#"{"src_ip":"8.8.8.8"}"#);
        assert_eq!(
            public.country,
            enricher
                .geoip
                .lookup_text("8.8.8.8")
                .country
                .map(|country| country.as_str().to_owned())
        );
        assert!(public.country.is_some());
        let documentation = enricher.fields_of_text(r#"{"src_ip":"203.0.113.5"}"#);
        assert_eq!(documentation.country, None);
    }
}
