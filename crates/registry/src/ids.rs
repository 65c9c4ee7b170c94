//! Validating newtypes for agency codes, node ids and service ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A malformed identifier.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IdError {
    /// The string is not an agency code.
    #[error("invalid agency code {0:?}: expected NNN.NN.NN.XNN, e.g. 000.00.00.G22")]
    AgencyCode(String),
    /// The string is not a node id.
    #[error(
        "invalid node id {0:?}: expected 1-63 lowercase letters, digits or '-', starting with a letter and not ending with '-', e.g. lgsp-langson"
    )]
    NodeId(String),
    /// The string is not a service id.
    #[error(
        "invalid service id {0:?}: expected {{provider}}/{{code}}/v{{N}}, e.g. 000.00.00.G22/citizen-lookup/v1"
    )]
    ServiceId(String),
}

/// `s` as kept in an [`IdError`]: cut after 128 characters (longer than any valid id), so that a huge
/// refused value does not become a huge error message or log line.
fn quoted(s: &str) -> String {
    match s.char_indices().nth(128) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// Most digits of a service version (`v` then at most 9 digits: it fits a u32).
const MAX_VERSION_DIGITS: usize = 9;

/// Implements `as_str`, `Display`, `FromStr`, `TryFrom<String>` and `From<Self> for String`.
macro_rules! string_id {
    ($ty:ident, $field:tt) => {
        impl $ty {
            /// The identifier as written.
            pub fn as_str(&self) -> &str {
                &self.$field
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.as_str().to_owned()
            }
        }
    };
}

/// Vietnam's electronic organ code, `NNN.NN.NN.XNN` (e.g. `000.00.00.G22`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgencyCode(String);

impl AgencyCode {
    /// Parses and validates an agency code.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        let ok = b.len() == 13
            && b.iter().enumerate().all(|(i, &c)| match i {
                3 | 6 | 9 => c == b'.',
                10 => c.is_ascii_uppercase(),
                _ => c.is_ascii_digit(),
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::AgencyCode(quoted(s)))
        }
    }
}
string_id!(AgencyCode, 0);

/// A node id: 1..=63 of `[a-z0-9-]`, starting with a letter, not ending with `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Parses and validates a node id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        let ok = (1..=63).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b[b.len() - 1] != b'-'
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::NodeId(quoted(s)))
        }
    }
}
string_id!(NodeId, 0);

/// A service id, `{provider agency code}/{service code}/v{N}`: at most
/// 13 + 1 + 64 + 1 + 10 ASCII characters, none of them a control character.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceId {
    full: String,
    provider: AgencyCode,
}

impl ServiceId {
    /// Parses and validates a service id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::ServiceId(quoted(s));
        let mut parts = s.split('/');
        let (Some(provider), Some(code), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let provider = AgencyCode::parse(provider).map_err(|_| bad())?;
        let code_ok = (1..=64).contains(&code.len())
            && code
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        // "v" then digits without a leading zero (so v1 and v01 cannot both exist).
        let version_ok = version.strip_prefix('v').is_some_and(|n| {
            !n.is_empty()
                && n.len() <= MAX_VERSION_DIGITS
                && n.bytes().all(|c| c.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
        });
        if code_ok && version_ok {
            Ok(Self {
                full: s.to_owned(),
                provider,
            })
        } else {
            Err(bad())
        }
    }

    /// The agency providing the service (the first component of the id).
    pub fn provider(&self) -> &AgencyCode {
        &self.provider
    }
}
string_id!(ServiceId, full);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn agency_codes() {
        for ok in ["000.00.00.G22", "000.00.00.H37", "000.01.37.H37"] {
            assert_eq!(AgencyCode::parse(ok).map(|c| c.to_string()), Ok(ok.into()));
        }
        for bad in [
            "",
            "000.00.00.g22",
            "000.00.00.G2",
            "000.00.00.G222",
            "00.000.00.G22",
            "000-00-00-G22",
            "000.00.00.022",
            " 000.00.00.G22",
            "000.00.00.Ǵ22",
        ] {
            assert_eq!(AgencyCode::parse(bad), Err(IdError::AgencyCode(bad.into())));
        }
    }

    #[test]
    fn node_ids() {
        for ok in [
            "lgsp-langson",
            "ministry-vpcp",
            "a",
            "a1-b2",
            &"a".repeat(63),
        ] {
            assert!(NodeId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "-abc",
            "abc-",
            "Abc",
            "a_b",
            "a.b",
            &"a".repeat(64),
        ] {
            assert_eq!(NodeId::parse(bad), Err(IdError::NodeId(bad.into())));
        }
    }

    #[test]
    fn service_ids() {
        let id = ServiceId::parse("000.00.00.G22/citizen-lookup/v1");
        assert_eq!(
            id.as_ref().map(|s| s.provider().as_str()),
            Ok("000.00.00.G22")
        );
        assert!(ServiceId::parse("000.00.00.G22/x/v10").is_ok());
        assert!(ServiceId::parse(&format!("000.00.00.G22/{}/v2", "a".repeat(64))).is_ok());
        for bad in [
            "x",
            "000.00.00.G22/citizen-lookup",
            "000.00.00.G22/citizen-lookup/1",
            "000.00.00.G22/citizen-lookup/v",
            "000.00.00.G22/citizen-lookup/v01",
            "000.00.00.G22/citizen-lookup/v1x",
            "000.00.00.G22/Citizen/v1",
            "000.00.00.G22//v1",
            "000.00.00.G22/a/v1/extra",
            "000.00.00.g22/a/v1",
            &format!("000.00.00.G22/{}/v2", "a".repeat(65)),
        ] {
            assert_eq!(ServiceId::parse(bad), Err(IdError::ServiceId(bad.into())));
        }
        let msg = IdError::ServiceId("x".into()).to_string();
        assert_eq!(
            msg,
            "invalid service id \"x\": expected {provider}/{code}/v{N}, e.g. 000.00.00.G22/citizen-lookup/v1"
        );
    }

    #[test]
    fn serde_as_string() {
        #[derive(Serialize, Deserialize)]
        struct W {
            a: AgencyCode,
            n: NodeId,
            s: ServiceId,
        }
        let text = "a = \"000.00.00.G22\"\nn = \"ministry\"\ns = \"000.00.00.G22/x/v1\"\n";
        let w: W = toml::from_str(text).unwrap();
        assert_eq!(w.s.provider(), &w.a);
        assert_eq!(toml::to_string(&w).unwrap(), text);
        assert!(toml::from_str::<W>(&text.replace("G22\"\nn", "g22\"\nn")).is_err());
    }

    /// Hand-written check of `NNN.NN.NN.XNN`, independent of the parser.
    fn looks_like_code(s: &str) -> bool {
        let c: Vec<char> = s.chars().collect();
        c.len() == 13
            && c[..3].iter().all(char::is_ascii_digit)
            && c[3] == '.'
            && c[4..6].iter().all(char::is_ascii_digit)
            && c[6] == '.'
            && c[7..9].iter().all(char::is_ascii_digit)
            && c[9] == '.'
            && c[10].is_ascii_uppercase()
            && c[11..].iter().all(char::is_ascii_digit)
    }

    proptest! {
        #[test]
        fn accepts_pattern(s in r"[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}") {
            let code = AgencyCode::parse(&s);
            prop_assert_eq!(code.as_ref().map(AgencyCode::as_str), Ok(s.as_str()));
        }

        #[test]
        fn rejects_one_char_changed(
            s in r"[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}",
            pos in 0usize..13,
            repl in any::<char>(),
        ) {
            let class_ok = match pos {
                3 | 6 | 9 => repl == '.',
                10 => repl.is_ascii_uppercase(),
                _ => repl.is_ascii_digit(),
            };
            prop_assume!(!class_ok);
            let mutated: String = s
                .chars()
                .enumerate()
                .map(|(i, c)| if i == pos { repl } else { c })
                .collect();
            prop_assert!(AgencyCode::parse(&mutated).is_err());
        }

        #[test]
        fn agrees_with_hand_check(s in r"\PC{0,16}|[0-9.A-Z]{13}") {
            prop_assert_eq!(AgencyCode::parse(&s).is_ok(), looks_like_code(&s));
        }

        /// Whatever is accepted is short and holds no control character.
        #[test]
        fn accepted_ids_are_bounded_and_clean(
            s in prop_oneof![
                any::<String>(),
                r"[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}/[a-z\x00-]{1,70}/v[0-9]{1,12}",
            ],
        ) {
            for ok in [
                AgencyCode::parse(&s).is_ok(),
                NodeId::parse(&s).is_ok(),
                ServiceId::parse(&s).is_ok(),
            ] {
                if ok {
                    prop_assert!(s.len() <= 13 + 1 + 64 + 1 + 10, "{}", s.len());
                    prop_assert!(!s.chars().any(char::is_control));
                }
            }
        }
    }

    #[test]
    fn service_versions_are_bounded_and_errors_short() {
        assert!(ServiceId::parse("000.00.00.G22/citizen-lookup/v999999999").is_ok());
        assert!(ServiceId::parse("000.00.00.G22/citizen-lookup/v1000000000").is_err());
        let huge = format!("000.00.00.G22/citizen-lookup/v1{}", "0".repeat(100_000));
        let e = ServiceId::parse(&huge).unwrap_err().to_string();
        assert!(e.len() < 500, "{}", e.len());
        let e = AgencyCode::parse(&"\0".repeat(100_000))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 500, "{}", e.len());
    }
}
