//! Certificate revocation lists: reading them (PEM or DER), what they say
//! (issuer, thisUpdate, nextUpdate, revoked serials), and the policy for a
//! list past its nextUpdate.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;

use crate::PkiError;
use crate::keys::read_bytes;

/// What a handshake does when a CRL is past its nextUpdate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrlPolicy {
    /// Keep accepting (the list still revokes what it names); the stale list
    /// shows in the metrics and in `/healthz`. The default: a CA that is late
    /// publishing must not stop all traffic.
    #[default]
    Warn,
    /// Refuse every certificate of the issuer of a stale list (rustls'
    /// `enforce_revocation_expiration`).
    Refuse,
}

impl CrlPolicy {
    /// `warn` or `refuse`.
    pub fn parse(s: &str) -> Option<CrlPolicy> {
        match s {
            "warn" => Some(CrlPolicy::Warn),
            "refuse" => Some(CrlPolicy::Refuse),
            _ => None,
        }
    }

    /// How the config file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CrlPolicy::Warn => "warn",
            CrlPolicy::Refuse => "refuse",
        }
    }
}

/// What one CRL file says.
#[derive(Clone, Debug)]
pub struct CrlInfo {
    /// The file.
    pub path: PathBuf,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds, if the list has one.
    pub next_update: Option<i64>,
    /// How many certificates it revokes.
    pub revoked: usize,
}

impl CrlInfo {
    /// Whether the list is past its nextUpdate at `now` (Unix seconds).
    pub fn is_stale(&self, now: i64) -> bool {
        self.next_update.is_some_and(|n| now > n)
    }
}

/// The CRLs of a TLS configuration, parsed.
#[derive(Clone, Debug, Default)]
pub struct CrlSet {
    /// The lists, as rustls takes them.
    pub(crate) ders: Vec<CertificateRevocationListDer<'static>>,
    /// What each list says, in file order.
    pub info: Vec<CrlInfo>,
    /// (issuer DN in DER, serial number bytes) of every revoked certificate.
    revoked: HashSet<(Vec<u8>, Vec<u8>)>,
}

impl CrlSet {
    /// Reads every file (PEM with `X509 CRL` blocks, or one DER list). A
    /// file that cannot be read or parsed is an error naming it.
    pub fn load(paths: &[PathBuf]) -> Result<CrlSet, PkiError> {
        let mut set = CrlSet::default();
        for path in paths {
            let bytes = read_bytes(path)?;
            let ders = parse_file(path, &bytes)?;
            for der in ders {
                set.add(path, der)?;
            }
        }
        Ok(set)
    }

    fn add(
        &mut self,
        path: &Path,
        der: CertificateRevocationListDer<'static>,
    ) -> Result<(), PkiError> {
        let bad = |reason: String| PkiError::BadCrl {
            path: path.to_path_buf(),
            reason,
        };
        let (rest, crl) =
            x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| bad(e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the list".into()));
        }
        let issuer_raw = crl.issuer().as_raw().to_vec();
        let mut revoked = 0;
        for entry in crl.iter_revoked_certificates() {
            self.revoked
                .insert((issuer_raw.clone(), entry.raw_serial().to_vec()));
            revoked += 1;
        }
        self.info.push(CrlInfo {
            path: path.to_path_buf(),
            issuer: crl.issuer().to_string(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked,
        });
        self.ders.push(der);
        Ok(())
    }

    /// Checks that every list is issued and signed by one of `cas`: a list
    /// from elsewhere (another CA of the same name, a forged one) would
    /// otherwise fail every handshake of that issuer's certificates.
    pub(crate) fn verify_issuers(
        &self,
        cas: &[rustls::pki_types::CertificateDer<'_>],
        ca_path: &Path,
    ) -> Result<(), PkiError> {
        let parsed: Vec<_> = cas
            .iter()
            .filter_map(|c| x509_parser::parse_x509_certificate(c).ok().map(|(_, c)| c))
            .collect();
        for (info, der) in self.info.iter().zip(&self.ders) {
            let bad = |reason: String| PkiError::BadCrl {
                path: info.path.clone(),
                reason,
            };
            let (_, crl) =
                x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| bad(e.to_string()))?;
            let issuers: Vec<_> = parsed
                .iter()
                .filter(|ca| ca.subject().as_raw() == crl.issuer().as_raw())
                .collect();
            if issuers.is_empty() {
                return Err(bad(format!(
                    "issued by {}, which is not the CA in {}",
                    crl.issuer(),
                    ca_path.display()
                )));
            }
            if !issuers
                .iter()
                .any(|ca| crl.verify_signature(ca.public_key()).is_ok())
            {
                return Err(bad(format!(
                    "its signature does not verify against the CA in {}",
                    ca_path.display()
                )));
            }
        }
        Ok(())
    }

    /// Whether the certificate `der` is revoked by one of these lists.
    pub fn revokes(&self, der: &[u8]) -> bool {
        cert_key(der).is_some_and(|k| self.revoked.contains(&k))
    }

    /// Whether these lists revoke serial `serial` of `issuer` (DN in DER).
    pub(crate) fn revokes_key(&self, issuer: &[u8], serial: &[u8]) -> bool {
        self.revoked.contains(&(issuer.to_vec(), serial.to_vec()))
    }

    /// Whether the set holds no list.
    pub fn is_empty(&self) -> bool {
        self.ders.is_empty()
    }
}

/// (issuer DN in DER, serial bytes) of a certificate.
pub(crate) fn cert_key(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        cert.issuer().as_raw().to_vec(),
        cert.tbs_certificate.raw_serial().to_vec(),
    ))
}

fn parse_file(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let bad = |reason: String| PkiError::BadCrl {
        path: path.to_path_buf(),
        reason,
    };
    let text_start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let is_pem = text_start.is_some_and(|i| bytes[i..].starts_with(b"-----BEGIN"));
    if is_pem {
        let ders = CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if ders.is_empty() {
            return Err(bad("no X509 CRL block".into()));
        }
        Ok(ders)
    } else if bytes.is_empty() {
        Err(bad("empty file".into()))
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes.to_vec())])
    }
}

/// Why handshakes were refused, counted.
#[derive(Debug, Default)]
pub struct RefusalCounts {
    revoked: AtomicU64,
    crl_expired: AtomicU64,
    unknown_ca: AtomicU64,
    other: AtomicU64,
}

/// The reasons [`RefusalCounts`] tells apart, as metric labels.
pub const REFUSAL_REASONS: [&str; 4] = ["revoked", "crl_expired", "unknown_ca", "other"];

impl RefusalCounts {
    /// Counts one refusal because of `error`.
    pub fn count(&self, error: &rustls::Error) {
        use rustls::CertificateError as C;
        let slot = match error {
            rustls::Error::InvalidCertificate(C::Revoked) => &self.revoked,
            rustls::Error::InvalidCertificate(
                C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. },
            ) => &self.crl_expired,
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                &self.unknown_ca
            }
            _ => &self.other,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts in the order of [`REFUSAL_REASONS`].
    pub fn snapshot(&self) -> [u64; 4] {
        [
            self.revoked.load(Ordering::Relaxed),
            self.crl_expired.load(Ordering::Relaxed),
            self.unknown_ca.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_spellings() {
        assert_eq!(CrlPolicy::parse("warn"), Some(CrlPolicy::Warn));
        assert_eq!(CrlPolicy::parse("refuse"), Some(CrlPolicy::Refuse));
        assert_eq!(CrlPolicy::parse("Refuse"), None);
        assert_eq!(CrlPolicy::default().as_str(), "warn");
    }

    #[test]
    fn unreadable_and_garbage_lists_name_their_file() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.crl");
        let e = CrlSet::load(std::slice::from_ref(&missing)).expect_err("missing");
        assert!(e.to_string().contains("missing.crl"), "{e}");
        for (name, body) in [
            ("empty.crl", &b""[..]),
            ("der.crl", &b"\x30\x03\x02\x01\x01"[..]),
            (
                "pem.crl",
                &b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"[..],
            ),
            (
                "cert.pem",
                &b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"[..],
            ),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, body).expect("write");
            let e = CrlSet::load(std::slice::from_ref(&p)).expect_err(name);
            assert!(matches!(e, PkiError::BadCrl { .. }), "{name}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}
