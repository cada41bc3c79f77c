//! Durations (`2s`, `500ms`, `1m30s`) and byte sizes (`64MiB`, `1.5MB`,
//! `4096`) as they are written in YAML, parsed into typed values.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written with a unit. Bare numbers are refused: `timeout: 5`
/// is ambiguous between seconds and milliseconds, and guessing wrong by a
/// factor of 1000 is the kind of mistake that takes a site down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

impl Span {
    pub const fn from_secs(s: u64) -> Self {
        Span(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Span(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

const DURATION_ALLOWED: &str = "a duration with a unit, like 250ms, 2s, 1m30s";

/// A JSON Schema of a string described by `$desc`, for a type read from
/// a string (`#[serde(try_from = "String")]`), which schemars would
/// otherwise describe by its fields.
macro_rules! string_schema {
    ($t:ty, $desc:literal) => {
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $desc })
            }
        }
    };
}
pub(crate) use string_schema;

impl schemars::JsonSchema for Span {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with a unit, like 250ms, 2s, 1m30s.",
            "pattern": "^\\s*([0-9]+(\\.[0-9]+)?\\s*(nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y)\\s*)+$"
        })
    }
}

/// As written in a file (so a schema can show defaults).
impl serde::Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_ALLOWED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Span, E> {
                humantime::parse_duration(s.trim()).map(Span).map_err(|e| {
                    E::custom(format!(
                        "invalid duration {s:?} ({e}); expected {DURATION_ALLOWED}"
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "{n} has no unit; expected {DURATION_ALLOWED}"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "{n} has no unit; expected {DURATION_ALLOWED}"
                )))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "{n} has no unit; expected {DURATION_ALLOWED}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes: a plain integer, or a number with a unit (`KiB`, `MiB`,
/// `GiB` are powers of 1024; `KB`, `MB`, `GB` powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl Size {
    pub const fn kib(n: u64) -> Self {
        Size(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        Size(n * 1024 * 1024)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

const SIZE_ALLOWED: &str = "a byte count or a size with a unit, like 4096, 512KiB, 64MiB, 1.5GB";

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        bytesize::ByteSize::from_str(s.trim())
            .map(|b| Size(b.as_u64()))
            .map_err(|_| format!("invalid size {s:?}; expected {SIZE_ALLOWED}"))
    }
}

impl schemars::JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A byte count, or a size with a unit: KiB, MiB, GiB (1024) or KB, MB, GB (1000), like 512KiB or 64MiB.",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*([KMGTPE]i?B|[kmgtpe]i?b|B|b)?\\s*$" }
            ]
        })
    }
}

/// As written in a file: `64MiB` for whole units, else the byte count.
impl serde::Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= factor && self.0 % factor == 0 {
                return s.collect_str(&format_args!("{}{unit}", self.0 / factor));
            }
        }
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_ALLOWED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                Err(E::custom(format!(
                    "{n} is negative; expected {SIZE_ALLOWED}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(yaml: &str) -> Result<Span, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }
    fn size(yaml: &str) -> Result<Size, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(span("2s").unwrap(), Span::from_secs(2));
        assert_eq!(span("1m 30s").unwrap(), Span::from_secs(90));
        assert_eq!(span("250ms").unwrap(), Span::from_millis(250));
        assert!(span("5").unwrap_err().contains("5 has no unit"));
        assert!(span("fast")
            .unwrap_err()
            .contains("invalid duration \"fast\""));
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(size("4096").unwrap(), Size(4096));
        assert_eq!(size("64MiB").unwrap(), Size::mib(64));
        assert_eq!(size("1 KiB").unwrap(), Size::kib(1));
        assert_eq!(size("1.5MB").unwrap(), Size(1_500_000));
        assert!(size("12XB").unwrap_err().contains("invalid size \"12XB\""));
        assert!(size("-1").unwrap_err().contains("negative"));
    }
}
