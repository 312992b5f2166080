//! Event payloads as JSON object text: carried from the honeypot's line to the store
//! without being built into a map and written out again.
//!
//! A map per event was most of the node's and a tenth of the Core's time (an allocation
//! per key and value, then serialising it all back). Only the top level of a line is ever
//! looked at (the event type, pot fields, timestamp, source address), so only the top level
//! is split, into borrowed keys and raw values.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The text of one JSON object (an event's `data`). Compared by value, not by text.
#[derive(Debug, Clone)]
pub struct JsonObject(Box<RawValue>);

impl JsonObject {
    /// `{}`.
    pub fn empty() -> Self {
        JsonObject(RawValue::from_string("{}".to_owned()).expect("{} is JSON"))
    }

    /// The object's text as a map was written (tests and rare callers).
    pub fn from_map(map: &Map<String, Value>) -> Self {
        JsonObject(serde_json::value::to_raw_value(map).expect("maps always serialise"))
    }

    /// Takes `raw` if it is an object; the error names what it is instead ("an array").
    pub fn from_raw(raw: Box<RawValue>) -> Result<Self, &'static str> {
        match JsonKind::of(raw.get()) {
            JsonKind::Object => Ok(JsonObject(raw)),
            other => Err(other.name()),
        }
    }

    /// Writes `entries` as one object, in their order. The keys are escaped and the raw
    /// values copied, so the text is JSON by construction: `to_raw_value` takes it without
    /// parsing it again (a third pass over every byte of the line on the node's hot path).
    pub(crate) fn from_entries(entries: &ObjectEntries<'_>) -> Self {
        JsonObject(serde_json::value::to_raw_value(entries).expect("entries always serialise"))
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn into_string(self) -> String {
        let text: Box<str> = self.0.into();
        text.into()
    }

    /// Parses the object into a map. Fails only for a number beyond `f64`'s range, which
    /// JSON text allows and the payload keeps as written.
    pub fn to_map(&self) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The value of the first of `keys` that holds a string (duplicate keys: the last one
    /// counts, as in a map).
    pub fn first_string(&self, keys: &[&str]) -> Option<String> {
        let entries = ObjectEntries::parse(self.0.get()).ok()?;
        keys.iter()
            .find_map(|key| entries.get(key).and_then(raw_string))
    }
    /// For each list of alias keys, the text of the first key present whose value is a
    /// string (unescaped) or a number (as written): one split of the object for them all.
    /// Other values (objects, arrays, booleans, null) count as absent.
    pub fn top_level_texts(&self, aliases: &[&[&str]]) -> Vec<Option<String>> {
        let Ok(entries) = ObjectEntries::parse(self.0.get()) else {
            return vec![None; aliases.len()];
        };
        aliases
            .iter()
            .map(|keys| {
                keys.iter().find_map(|key| {
                    let value = entries.get(key)?;
                    match JsonKind::of(value.get()) {
                        JsonKind::String => raw_string(value),
                        JsonKind::Number => Some(value.get().to_owned()),
                        _ => None,
                    }
                })
            })
            .collect()
    }
}

impl Default for JsonObject {
    fn default() -> Self {
        JsonObject::empty()
    }
}

impl PartialEq for JsonObject {
    fn eq(&self, other: &Self) -> bool {
        if self.get() == other.get() {
            return true;
        }
        match (self.to_map(), other.to_map()) {
            (Ok(mine), Ok(theirs)) => mine == theirs,
            _ => false,
        }
    }
}

impl Serialize for JsonObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        JsonObject::from_raw(raw)
            .map_err(|found| de::Error::custom(format!("expected a JSON object, found {found}")))
    }
}

/// The top-level members of one JSON object: keys borrowed where they have no escapes,
/// values as raw JSON text. A key given twice keeps its last value, as a map would.
#[derive(Debug)]
pub(crate) struct ObjectEntries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// Above this many members duplicates are found with a hash map instead of by comparing
/// every pair: a hostile line of many keys must not cost quadratic time.
const PAIRWISE_DUPLICATE_CHECK_MAX: usize = 32;

impl<'a> ObjectEntries<'a> {
    /// Splits `text`, which must be one JSON object.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let ObjectEntries(mut entries) = serde_json::from_str(text)?;
        if entries.len() <= PAIRWISE_DUPLICATE_CHECK_MAX {
            let mut index = 0;
            while index < entries.len() {
                let key = &entries[index].0;
                if entries[index + 1..].iter().any(|(later, _)| later == key) {
                    entries.remove(index);
                } else {
                    index += 1;
                }
            }
        } else {
            let mut last_position: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
            for (position, (key, _)) in entries.iter().enumerate() {
                last_position.insert(key.as_ref(), position);
            }
            if last_position.len() < entries.len() {
                let keep: Vec<bool> = entries
                    .iter()
                    .enumerate()
                    .map(|(position, (key, _))| last_position[key.as_ref()] == position)
                    .collect();
                let mut keep = keep.into_iter();
                entries.retain(|_| keep.next().unwrap_or(false));
            }
        }
        Ok(ObjectEntries(entries))
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(candidate, _)| candidate == key)
            .map(|(_, value)| *value)
    }

    /// Removes `key` and returns its value.
    pub fn take(&mut self, key: &str) -> Option<&'a RawValue> {
        let position = self.0.iter().position(|(candidate, _)| candidate == key)?;
        Some(self.0.remove(position).1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends every entry of `others` whose key is not here yet (the entries here win a
    /// clash). One hash look-up per entry: a line with thousands of keys on both sides must
    /// not cost a comparison per pair.
    pub fn extend_missing(&mut self, others: ObjectEntries<'a>) {
        let missing =
            entries_missing_from::<str, _, _>(self.0.iter().map(|(key, _)| key.as_ref()), others.0);
        self.0.extend(missing);
    }
}

/// The entries of `others` whose key is not among `present`, in their order. Generic over
/// the key so a test can count comparisons: the work must grow with the number of keys, not
/// with their product.
fn entries_missing_from<'k, Q, K, V>(
    present: impl Iterator<Item = &'k Q>,
    others: Vec<(K, V)>,
) -> Vec<(K, V)>
where
    Q: std::hash::Hash + Eq + ?Sized + 'k,
    K: std::borrow::Borrow<Q>,
{
    let present: HashSet<&Q> = present.collect();
    others
        .into_iter()
        .filter(|(key, _)| !present.contains(key.borrow()))
        .collect()
}

impl Serialize for ObjectEntries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ObjectEntries<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = ObjectEntries<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(ObjectKey(key)) = map.next_key()? {
                    entries.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(ObjectEntries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// A member name, borrowed from the input unless it had escapes.
struct ObjectKey<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for ObjectKey<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = ObjectKey<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(ObjectKey(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(ObjectKey(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(ObjectKey(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The string a raw value holds, if it is one.
pub(crate) fn raw_string(value: &RawValue) -> Option<String> {
    if JsonKind::of(value.get()) != JsonKind::String {
        return None;
    }
    serde_json::from_str(value.get()).ok()
}

/// What kind of JSON value a text holds, told by its first character (the text is known to
/// be JSON, or only an error message depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonKind {
    Object,
    Array,
    String,
    Boolean,
    Null,
    Number,
}

impl JsonKind {
    pub fn of(text: &str) -> Self {
        match text.trim_start().as_bytes().first() {
            Some(b'{') => JsonKind::Object,
            Some(b'[') => JsonKind::Array,
            Some(b'"') => JsonKind::String,
            Some(b't' | b'f') => JsonKind::Boolean,
            Some(b'n') => JsonKind::Null,
            _ => JsonKind::Number,
        }
    }

    /// For error messages: "found an array".
    pub fn name(self) -> &'static str {
        match self {
            JsonKind::Object => "an object",
            JsonKind::Array => "an array",
            JsonKind::String => "a string",
            JsonKind::Boolean => "a boolean",
            JsonKind::Null => "null",
            JsonKind::Number => "a number",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_texts_take_strings_and_numbers_the_last_repeated_key_and_the_first_alias() {
        let raw = RawValue::from_string(
            r#"{"src_ip":"1.2.3.4","input":"ls \"-la\"","dst_port":22,"src_port":"x",
                "src_port":40001,"user":{"name":"root"},"shasum":null,"command":"id"}"#
                .to_owned(),
        )
        .unwrap();
        let object = JsonObject::from_raw(raw).unwrap();
        let texts = object.top_level_texts(&[
            &["src_ip", "ip"],
            &["input", "command"],
            &["dst_port"],
            &["src_port"],
            &["user", "username"],
            &["shasum"],
            &["missing", "command"],
        ]);
        assert_eq!(
            texts,
            [
                Some("1.2.3.4".to_owned()),
                Some(r#"ls "-la""#.to_owned()),
                Some("22".to_owned()),
                Some("40001".to_owned()),
                None,
                None,
                Some("id".to_owned()),
            ]
        );
    }

    /// A key that counts how often it is compared.
    #[derive(Debug)]
    struct CountedKey<'c>(u32, &'c std::cell::Cell<u64>);

    impl std::hash::Hash for CountedKey<'_> {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    impl PartialEq for CountedKey<'_> {
        fn eq(&self, other: &Self) -> bool {
            self.1.set(self.1.get() + 1);
            self.0 == other.0
        }
    }
    impl Eq for CountedKey<'_> {}

    #[test]
    fn merging_keys_compares_each_key_a_bounded_number_of_times() {
        let comparisons = std::cell::Cell::new(0);
        let keys_per_side = 4_000;
        let present: Vec<CountedKey> = (0..keys_per_side)
            .map(|n| CountedKey(n, &comparisons))
            .collect();
        // Half the other side clashes with what is present, half is new.
        let others: Vec<(CountedKey, u32)> = (keys_per_side / 2..keys_per_side * 3 / 2)
            .map(|n| (CountedKey(n, &comparisons), n))
            .collect();
        let missing = entries_missing_from(present.iter(), others);
        assert_eq!(
            missing.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            (keys_per_side..keys_per_side * 3 / 2).collect::<Vec<_>>()
        );
        // A look-up per key compares with about one candidate; a scan per key would make
        // 4,000 × 4,000 comparisons.
        assert!(
            comparisons.get() <= 4 * u64::from(keys_per_side),
            "{} comparisons for {keys_per_side} keys a side",
            comparisons.get()
        );
    }

    #[test]
    fn entries_keep_the_last_of_a_repeated_key_like_a_map() {
        for repeats in [2, 40] {
            let mut text = String::from("{");
            for n in 0..repeats {
                text.push_str(&format!("\"k\":{n},\"other{n}\":true,"));
            }
            text.push_str("\"esc\\u0061ped\":\"x\"}");
            let entries = ObjectEntries::parse(&text).unwrap();
            assert_eq!(
                entries.get("k").unwrap().get(),
                (repeats - 1).to_string(),
                "{text}"
            );
            assert!(entries.get("escaped").is_some());
            let rebuilt = JsonObject::from_entries(&entries);
            let map: Map<String, Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(rebuilt.to_map().unwrap(), map);
        }
    }

    #[test]
    fn only_objects_are_json_objects() {
        for (text, found) in [
            ("[1]", "an array"),
            ("\"x\"", "a string"),
            ("7", "a number"),
        ] {
            let error = serde_json::from_str::<JsonObject>(text).unwrap_err();
            assert!(error.to_string().contains(found), "{error}");
        }
        let object: JsonObject = serde_json::from_str(r#"{"a": [1, 2]}"#).unwrap();
        assert_eq!(
            object,
            JsonObject::from_map(&serde_json::from_str(r#"{"a":[1,2]}"#).unwrap())
        );
        assert_eq!(
            object.first_string(&["missing", "a"]),
            None,
            "an array is not a string"
        );
    }

    /// Found by fuzzing: JSON allows numbers no `f64` holds. The payload keeps them as
    /// written; only turning it into a map fails, and comparing never panics.
    #[test]
    fn a_number_beyond_f64_is_kept_as_written() {
        let huge = format!("{{\"k\":1{}}}", "7".repeat(400));
        let object: JsonObject = serde_json::from_str(&huge).unwrap();
        assert_eq!(object.get(), huge);
        assert!(object.to_map().is_err());
        assert_ne!(object, JsonObject::empty());
        assert_eq!(object, object.clone());
    }
}
