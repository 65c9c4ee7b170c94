//! Identities: `truc://{role}/{name}` URIs in certificate subject alternative names.

use std::fmt;

use crate::PkiError;

const SCHEME: &str = "truc://";

/// The kind of participant a certificate belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The central gRPC hub (a server).
    Hub,
    /// An agency node (a server and a client of the hub).
    Node,
    /// An administrator (a client).
    Admin,
    /// An application client (a client).
    Client,
}

impl Role {
    /// The lowercase name used in URIs and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Node => "node",
            Role::Admin => "admin",
            Role::Client => "client",
        }
    }

    /// Whether certificates of this role are also server certificates (with a DNS name).
    pub fn is_server(self) -> bool {
        matches!(self, Role::Hub | Role::Node)
    }
}

impl std::str::FromStr for Role {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, PkiError> {
        match s {
            "hub" => Ok(Role::Hub),
            "node" => Ok(Role::Node),
            "admin" => Ok(Role::Admin),
            "client" => Ok(Role::Client),
            other => Err(PkiError::InvalidRole(other.to_owned())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A participant: its role and its name (unique per role).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The role.
    pub role: Role,
    /// The name: 1..=63 lowercase letters, digits and '-', also a valid DNS name.
    pub name: String,
}

/// Whether `name` may name a participant (or a hub replica): 1 to 63
/// lowercase letters, digits and `-`, and a valid DNS name because server
/// certificates carry it as their DNS subject alternative name (so also
/// safe as a file name).
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && rustls::pki_types::DnsName::try_from(name).is_ok()
}

impl Identity {
    /// Builds an identity after validating the name.
    pub fn new(role: Role, name: &str) -> Result<Self, PkiError> {
        if !valid_name(name) {
            return Err(PkiError::InvalidName(name.to_owned()));
        }
        Ok(Identity {
            role,
            name: name.to_owned(),
        })
    }

    /// The SAN URI form, `truc://{role}/{name}`.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}/{}", self.role, self.name)
    }

    /// Parses a `truc://{role}/{name}` URI.
    pub fn from_uri(uri: &str) -> Result<Self, PkiError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| PkiError::NoIdentity(format!("{uri:?} is not a truc:// uri")))?;
        let (role, name) = rest
            .split_once('/')
            .ok_or_else(|| PkiError::NoIdentity(format!("{uri:?} lacks a name")))?;
        Identity::new(role.parse()?, name)
    }

    /// Reads the identity from a DER certificate: exactly one `truc://` URI SAN is required.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| PkiError::NoIdentity(format!("unparsable certificate: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| PkiError::NoIdentity(format!("bad subject alternative names: {e}")))?
            .ok_or_else(|| PkiError::NoIdentity("no subject alternative names".into()))?;
        let mut uris = san.value.general_names.iter().filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with(SCHEME) => Some(*u),
            _ => None,
        });
        match (uris.next(), uris.next()) {
            (Some(uri), None) => Identity::from_uri(uri),
            (None, _) => Err(PkiError::NoIdentity("no truc:// uri".into())),
            (Some(_), Some(_)) => Err(PkiError::NoIdentity("more than one truc:// uri".into())),
        }
    }

    /// Reads the identity from the first certificate of a PEM file's contents.
    pub fn from_cert_pem(pem: &[u8]) -> Result<Self, PkiError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let der = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or_else(|| PkiError::NoIdentity("no certificate in the pem data".into()))?
            .map_err(|e| PkiError::NoIdentity(format!("bad pem: {e}")))?;
        Identity::from_cert_der(&der)
    }

    /// The file-name stem `{role}-{name}`.
    pub(crate) fn stem(&self) -> String {
        format!("{}-{}", self.role, self.name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["hub", "lgsp-langson", "a", "n1", &"x".repeat(63)] {
            assert!(Identity::new(Role::Node, ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Hub",
            "a_b",
            "a.b",
            "a/b",
            "-a",
            "a-",
            "123",
            &"x".repeat(64),
        ] {
            assert!(Identity::new(Role::Node, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uri_round_trip() -> Result<(), PkiError> {
        let id = Identity::new(Role::Node, "lgsp-langson")?;
        assert_eq!(id.uri(), "truc://node/lgsp-langson");
        assert_eq!(id.to_string(), "node/lgsp-langson");
        assert_eq!(Identity::from_uri(&id.uri())?, id);
        assert!(Identity::from_uri("truc://root/x").is_err());
        assert!(Identity::from_uri("truc://node/x/y").is_err());
        assert!(Identity::from_uri("http://node/x").is_err());
        Ok(())
    }
}
