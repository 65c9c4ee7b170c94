//! The development CA's certificate revocation list (`ca.crl`, PEM): `init`
//! writes an empty one, `revoke` adds a certificate to it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams,
    SerialNumber,
};

use crate::ca::{load_issuer, write_file};

/// `t` as rcgen's date type (which this crate does not name).
macro_rules! to_time {
    ($t:expr) => {
        rcgen::date_time_ymd(1970, 1, 1) + $t.duration_since(UNIX_EPOCH).unwrap_or_default()
    };
}
use crate::{DevCaError, Layout, PkiError};

/// How long a list this CA writes is valid (its nextUpdate): servers under
/// `crl_policy = "refuse"` refuse every certificate once it passes, so
/// re-run `truc pki revoke` (or `reissue_crl`) before.
pub const CRL_VALIDITY_DAYS: u32 = 30;

/// Which certificate to revoke.
#[derive(Clone, Debug)]
pub enum RevokeTarget {
    /// The certificate in this PEM file (it must be issued by the CA).
    Cert(PathBuf),
    /// This serial number, in hex (colons allowed).
    Serial(String),
}

/// What `revoke` did.
#[derive(Clone, Debug)]
pub struct Revoked {
    /// The serial number revoked, lowercase hex.
    pub serial: String,
    /// Whether it was already on the list (the list is rewritten anyway).
    pub already: bool,
    /// How many certificates the list now revokes.
    pub total: usize,
    /// The list written.
    pub crl: PathBuf,
}

/// The reasons `revoke` accepts, as written on the command line.
pub const REASONS: [&str; 9] = [
    "unspecified",
    "key-compromise",
    "ca-compromise",
    "affiliation-changed",
    "superseded",
    "cessation-of-operation",
    "certificate-hold",
    "privilege-withdrawn",
    "aa-compromise",
];

/// Parses a reason as [`REASONS`] spells it.
pub fn parse_reason(s: &str) -> Option<RevocationReason> {
    use RevocationReason::*;
    Some(match s {
        "unspecified" => Unspecified,
        "key-compromise" => KeyCompromise,
        "ca-compromise" => CaCompromise,
        "affiliation-changed" => AffiliationChanged,
        "superseded" => Superseded,
        "cessation-of-operation" => CessationOfOperation,
        "certificate-hold" => CertificateHold,
        "privilege-withdrawn" => PrivilegeWithdrawn,
        "aa-compromise" => AaCompromise,
        _ => return None,
    })
}

fn reason_from_code(code: u8) -> Option<RevocationReason> {
    use RevocationReason::*;
    Some(match code {
        0 => Unspecified,
        1 => KeyCompromise,
        2 => CaCompromise,
        3 => AffiliationChanged,
        4 => Superseded,
        5 => CessationOfOperation,
        6 => CertificateHold,
        8 => RemoveFromCrl,
        9 => PrivilegeWithdrawn,
        10 => AaCompromise,
        _ => return None,
    })
}

/// Writes the empty list of a new CA (`init`).
pub(crate) fn write_new(
    layout: &Layout,
    ca: &rcgen::Certificate,
    key: &KeyPair,
) -> Result<(), DevCaError> {
    let now = SystemTime::now();
    let pem = sign(layout, ca, key, Vec::new(), now, validity_end(now))?;
    write_file(&layout.crl(), pem.as_bytes(), false)
}

/// Adds a certificate to the CA's list in `layout` and rewrites it (a new
/// file renamed over the old one, so a server reading it never sees half a
/// list). A list that does not exist yet (a CA from before lists) is
/// created.
pub fn revoke(
    layout: &Layout,
    target: &RevokeTarget,
    reason: Option<RevocationReason>,
) -> Result<Revoked, DevCaError> {
    let (ca, key) = load_issuer(layout)?;
    let serial = match target {
        RevokeTarget::Cert(path) => serial_of_cert(layout, path)?,
        RevokeTarget::Serial(hex) => parse_serial(hex)?,
    };
    let mut entries = read_entries(layout)?;
    let already = entries.iter().any(|e| e.serial_number.as_ref() == serial);
    if !already {
        entries.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: to_time!(SystemTime::now()),
            reason_code: reason,
            invalidity_date: None,
        });
    }
    let total = entries.len();
    let now = SystemTime::now();
    let pem = sign(layout, &ca, &key, entries, now, validity_end(now))?;
    replace_file(&layout.crl(), pem.as_bytes())?;
    tracing::info!(serial = %hex::encode(&serial), total, "revoked certificate");
    Ok(Revoked {
        serial: hex::encode(&serial),
        already,
        total,
        crl: layout.crl(),
    })
}

/// Signs the CA's list again, unchanged but for its thisUpdate and
/// nextUpdate (a list about to pass its nextUpdate; tests make stale lists).
pub fn reissue_crl(
    layout: &Layout,
    this_update: SystemTime,
    next_update: SystemTime,
) -> Result<PathBuf, DevCaError> {
    let (ca, key) = load_issuer(layout)?;
    let entries = read_entries(layout)?;
    let pem = sign(layout, &ca, &key, entries, this_update, next_update)?;
    replace_file(&layout.crl(), pem.as_bytes())?;
    Ok(layout.crl())
}

fn validity_end(now: SystemTime) -> SystemTime {
    now + Duration::from_secs(u64::from(CRL_VALIDITY_DAYS) * 86_400)
}

fn sign(
    layout: &Layout,
    ca: &rcgen::Certificate,
    key: &KeyPair,
    revoked_certs: Vec<RevokedCertParams>,
    this_update: SystemTime,
    next_update: SystemTime,
) -> Result<String, DevCaError> {
    let gen_err = |source| DevCaError::Generate {
        path: layout.crl(),
        source,
    };
    // Milliseconds since the epoch: increases with every list this CA writes.
    let number = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let params = CertificateRevocationListParams {
        this_update: to_time!(this_update),
        next_update: to_time!(next_update),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(ca, key).map_err(gen_err)?;
    crl.pem().map_err(gen_err)
}

/// The entries of the current list (none if there is no list yet).
fn read_entries(layout: &Layout) -> Result<Vec<RevokedCertParams>, DevCaError> {
    let path = layout.crl();
    if !path.exists() {
        return Ok(Vec::new());
    }
    // Refuses a list that does not parse, naming the file.
    truc_pki::CrlSet::load(std::slice::from_ref(&path))?;
    let bytes = fs::read(&path).map_err(|source| PkiError::Read {
        path: path.clone(),
        source,
    })?;
    let bad = |reason: String| PkiError::BadCrl {
        path: path.clone(),
        reason,
    };
    use rustls::pki_types::{CertificateRevocationListDer, pem::PemObject};
    let der =
        CertificateRevocationListDer::from_pem_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for entry in crl.iter_revoked_certificates() {
        let secs = entry.revocation_date.timestamp().max(0) as u64;
        out.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(strip_zeros(entry.raw_serial())),
            revocation_time: to_time!(UNIX_EPOCH + Duration::from_secs(secs)),
            reason_code: entry.reason_code().and_then(|(_, r)| reason_from_code(r.0)),
            invalidity_date: None,
        });
    }
    Ok(out)
}

/// A serial without the sign byte DER adds when the top bit is set.
fn strip_zeros(serial: &[u8]) -> &[u8] {
    let mut s = serial;
    while s.len() > 1 && s[0] == 0 {
        s = &s[1..];
    }
    s
}

fn parse_serial(hex_text: &str) -> Result<Vec<u8>, DevCaError> {
    let clean: String = hex_text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let clean = if clean.len() % 2 == 1 {
        format!("0{clean}")
    } else {
        clean
    };
    let bytes =
        hex::decode(&clean).map_err(|e| DevCaError::BadSerial(format!("{hex_text:?}: {e}")))?;
    if bytes.is_empty() || bytes.len() > 20 {
        return Err(DevCaError::BadSerial(format!(
            "{hex_text:?}: expected 1 to 20 bytes of hex"
        )));
    }
    Ok(strip_zeros(&bytes).to_vec())
}

fn serial_of_cert(layout: &Layout, path: &Path) -> Result<Vec<u8>, DevCaError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let bad = |reason: String| PkiError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let der = CertificateDer::from_pem_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let ca_der =
        CertificateDer::from_pem_file(layout.ca_cert()).map_err(|e| PkiError::BadCertificate {
            path: layout.ca_cert(),
            reason: e.to_string(),
        })?;
    let (_, ca) =
        x509_parser::parse_x509_certificate(&ca_der).map_err(|e| PkiError::BadCertificate {
            path: layout.ca_cert(),
            reason: e.to_string(),
        })?;
    if cert.issuer().as_raw() != ca.subject().as_raw() || !signed_by(&der, ca_der.clone()) {
        return Err(bad(format!(
            "is issued by {}, not by this CA ({})",
            cert.issuer(),
            ca.subject()
        ))
        .into());
    }
    Ok(strip_zeros(cert.tbs_certificate.raw_serial()).to_vec())
}

/// Whether `cert` chains to `ca` (its signature verifies: CAs of the same
/// name but other keys are told apart). Other failures (an expired
/// certificate) do not matter for revoking it.
fn signed_by(
    cert: &rustls::pki_types::CertificateDer<'_>,
    ca: rustls::pki_types::CertificateDer<'static>,
) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(ca).is_err() {
        return false;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider).build()
    else {
        return false;
    };
    use rustls::CertificateError as C;
    !matches!(
        verifier.verify_client_cert(cert, &[], rustls::pki_types::UnixTime::now()),
        Err(rustls::Error::InvalidCertificate(
            C::BadSignature | C::UnknownIssuer | C::InvalidPurpose
        ))
    )
}

/// Writes `path` through a temporary file renamed over it.
fn replace_file(path: &Path, contents: &[u8]) -> Result<(), DevCaError> {
    let write_err = |source| DevCaError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("crl.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::File::create(&tmp).map_err(write_err)?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(write_err)?;
    fs::rename(&tmp, path).map_err(write_err)
}
