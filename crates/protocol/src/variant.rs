//! Lenient (de)serialisation of externally tagged enums, shared by `Message` and `Command`.
//!
//! Peers in the field write unit variants three ways (`"NodeDrop"`, `{"NodeDrop": {}}`,
//! `{"NodeDrop": null}`); serde's derive accepts only some of them, so the tagged enums of
//! the contract are (de)serialised by the macro below. It always writes the `{}` form, and
//! it refuses objects with zero or several variant keys with an error naming them.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The payload of a unit variant: written as `{}`, read from `null`, `{}` or any object
/// (unknown fields are ignored, as everywhere on the wire).
pub(crate) struct UnitPayload;

impl Serialize for UnitPayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for UnitPayload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UnitPayloadVisitor;
        impl<'de> Visitor<'de> for UnitPayloadVisitor {
            type Value = UnitPayload;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("null or an object as the payload of a unit variant")
            }
            fn visit_unit<E: de::Error>(self) -> Result<UnitPayload, E> {
                Ok(UnitPayload)
            }
            fn visit_none<E: de::Error>(self) -> Result<UnitPayload, E> {
                Ok(UnitPayload)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UnitPayload, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(UnitPayload)
            }
        }
        deserializer.deserialize_any(UnitPayloadVisitor)
    }
}

/// Implements `Serialize` and lenient `Deserialize` for an externally tagged enum whose
/// variants either carry one payload (`payload`) or none (`unit`).
macro_rules! externally_tagged_enum {
    ($enum_type:ident, $what:literal, payload { $($payload_variant:ident),* $(,)? }, unit { $($unit_variant:ident),* $(,)? }) => {
        impl serde::Serialize for $enum_type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                match self {
                    $( $enum_type::$payload_variant(payload) => map.serialize_entry(stringify!($payload_variant), payload)?, )*
                    $( $enum_type::$unit_variant => map.serialize_entry(stringify!($unit_variant), &$crate::variant::UnitPayload)?, )*
                }
                map.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $enum_type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TaggedVisitor;
                impl<'de> serde::de::Visitor<'de> for TaggedVisitor {
                    type Value = $enum_type;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                        write!(formatter, "a {}: an object with exactly one variant key, or a unit variant name", $what)
                    }

                    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<$enum_type, E> {
                        match name {
                            $( stringify!($unit_variant) => Ok($enum_type::$unit_variant), )*
                            $( stringify!($payload_variant) => Err(E::custom(format_args!("{} variant {:?} needs a payload", $what, name))), )*
                            _ => Err(E::custom(format_args!("unknown {} variant {:?}", $what, name))),
                        }
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$enum_type, A::Error> {
                        use serde::de::Error;
                        let name: String = map
                            .next_key()?
                            .ok_or_else(|| A::Error::custom(format_args!("{} object has no variant key", $what)))?;
                        let value = match name.as_str() {
                            $( stringify!($payload_variant) => $enum_type::$payload_variant(map.next_value()?), )*
                            $( stringify!($unit_variant) => {
                                map.next_value::<$crate::variant::UnitPayload>()?;
                                $enum_type::$unit_variant
                            } )*
                            _ => return Err(A::Error::custom(format_args!("unknown {} variant {:?}", $what, name))),
                        };
                        if let Some(extra) = map.next_key::<String>()? {
                            return Err(A::Error::custom(format_args!(
                                "{} has more than one variant key ({:?} and {:?})", $what, name, extra
                            )));
                        }
                        Ok(value)
                    }
                }
                deserializer.deserialize_any(TaggedVisitor)
            }
        }
    };
}

pub(crate) use externally_tagged_enum;
