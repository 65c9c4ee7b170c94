//! The development CA: `init` writes a CA, one certificate per participant and the hub's
//! audit signing key; `issue` adds one more certificate later.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom;

use crate::{DevCaError, Identity, Layout, PkiError, Role, TlsFiles};

const CA_COMMON_NAME: &str = "truc development CA";
/// The longest a participant certificate may be valid: a leaked key stays
/// useful only that long where peers do not load the CA's CRL.
pub const MAX_LEAF_VALIDITY_DAYS: u32 = 366;
/// The default validity of participant certificates (`truc pki init` and
/// `truc pki issue`).
pub const DEFAULT_LEAF_VALIDITY_DAYS: u32 = 365;
/// The CA outlives its leaves so they can be reissued from it: ten years,
/// or the leaves' validity if that is longer.
const CA_VALIDITY_DAYS: u32 = 3_650;

/// What `init` issues: the hub, nodes, admin and clients by name.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The hub's name (also its DNS name).
    pub hub: String,
    /// Node names (also their DNS names).
    pub nodes: Vec<String>,
    /// The administrator's name.
    pub admin: String,
    /// Client names.
    pub clients: Vec<String>,
    /// Validity of every participant certificate, in days from now (1 to
    /// [`MAX_LEAF_VALIDITY_DAYS`]); the CA is valid for ten years.
    pub validity_days: u32,
}

/// Creates a development CA and every participant's certificate in `dir`; never overwrites a CA.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<Layout, DevCaError> {
    check_validity(opts.validity_days)?;
    let mut ids = vec![Identity::new(Role::Hub, &opts.hub)?];
    for n in &opts.nodes {
        let id = Identity::new(Role::Node, n)?;
        // Clients verify servers by DNS name, so two servers must not share a name.
        if ids.iter().any(|other| other.name == id.name) {
            return Err(DevCaError::DuplicateName(id.name));
        }
        ids.push(id);
    }
    ids.push(Identity::new(Role::Admin, &opts.admin)?);
    for c in &opts.clients {
        ids.push(Identity::new(Role::Client, c)?);
    }

    let layout = Layout::new(dir);
    fs::create_dir_all(dir).map_err(|source| DevCaError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_cert_path = layout.ca_cert();
    if ca_cert_path.exists() {
        return Err(DevCaError::CaExists(ca_cert_path));
    }
    for id in &ids {
        let files = layout.files(id);
        for p in [files.cert, files.key] {
            if p.exists() {
                return Err(DevCaError::FileExists(p));
            }
        }
    }

    let gen_err = |source| DevCaError::Generate {
        path: ca_cert_path.clone(),
        source,
    };
    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut params = ca_params();
    set_validity(&mut params, CA_VALIDITY_DAYS.max(opts.validity_days));
    params.serial_number = Some(random_serial());
    let ca_cert = params.self_signed(&ca_key).map_err(gen_err)?;
    write_file(&layout.ca_key(), ca_key.serialize_pem().as_bytes(), true)?;
    write_file(&ca_cert_path, ca_cert.pem().as_bytes(), false)?;

    for id in &ids {
        issue_with(&layout, &ca_cert, &ca_key, id, opts.validity_days)?;
    }
    write_audit_key(&layout)?;
    for id in ids.iter().filter(|id| id.role == Role::Node) {
        write_ed25519_key(
            &layout.witness_key(&id.name),
            &layout.witness_public_key(&id.name),
        )?;
    }
    crate::crl::write_new(&layout, &ca_cert, &ca_key)?;
    tracing::info!(dir = %dir.display(), certificates = ids.len(), "development pki initialised");
    Ok(layout)
}

/// Issues one more participant certificate from the CA files in `layout`; never overwrites.
/// A hub or node certificate is refused when the other server role already has
/// a certificate of that name in `layout`: clients check servers by DNS name,
/// so a node named like the hub must never exist.
pub fn issue(layout: &Layout, id: &Identity, validity_days: u32) -> Result<TlsFiles, DevCaError> {
    check_validity(validity_days)?;
    if id.role.is_server() {
        for other in [Role::Hub, Role::Node] {
            if other != id.role {
                let existing = layout.files(&Identity {
                    role: other,
                    name: id.name.clone(),
                });
                if existing.cert.exists() {
                    return Err(DevCaError::DuplicateName(id.name.clone()));
                }
            }
        }
    }
    let (issuer, ca_key) = load_issuer(layout)?;
    let files = issue_with(layout, &issuer, &ca_key, id, validity_days)?;
    // A node witnesses the hub's log with a key of its own; a reissued
    // node certificate keeps the witness key it has.
    if id.role == Role::Node && !layout.witness_key(&id.name).exists() {
        write_ed25519_key(
            &layout.witness_key(&id.name),
            &layout.witness_public_key(&id.name),
        )?;
    }
    Ok(files)
}

/// The CA of `layout` as an in-memory issuer (same subject, same key, same
/// key identifier as the certificate on disk), and its key.
pub(crate) fn load_issuer(layout: &Layout) -> Result<(rcgen::Certificate, KeyPair), DevCaError> {
    let ca_cert_path = layout.ca_cert();
    let ca_key_path = layout.ca_key();
    let ca_pem = read_string(&ca_cert_path)?;
    let key_pem = read_string(&ca_key_path)?;
    let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadKey {
        path: ca_key_path.clone(),
        reason: e.to_string(),
    })?;
    let ca_der = {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                PkiError::NoCertificate(ca_cert_path.clone())
            }
            e => PkiError::BadCertificate {
                path: ca_cert_path.clone(),
                reason: e.to_string(),
            },
        })?
    };
    let bad_ca = |reason: String| PkiError::BadCertificate {
        path: ca_cert_path.clone(),
        reason,
    };
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&ca_der).map_err(|e| bad_ca(e.to_string()))?;
    if parsed.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
        return Err(bad_ca(format!(
            "does not match the key in {}",
            ca_key_path.display()
        ))
        .into());
    }
    // Rebuild an in-memory issuer with the same subject and key; leaves it signs chain to
    // the CA certificate on disk (same issuer name, same key, same key identifier).
    let issuer = ca_params()
        .self_signed(&ca_key)
        .map_err(|source| DevCaError::Generate {
            path: ca_cert_path.clone(),
            source,
        })?;
    let (_, rebuilt) =
        x509_parser::parse_x509_certificate(issuer.der()).map_err(|e| bad_ca(e.to_string()))?;
    if rebuilt.subject().as_raw() != parsed.subject().as_raw() {
        return Err(bad_ca(format!(
            "subject is not {CA_COMMON_NAME:?}: {}",
            parsed.subject()
        ))
        .into());
    }
    Ok((issuer, ca_key))
}

fn check_validity(days: u32) -> Result<(), DevCaError> {
    if (1..=MAX_LEAF_VALIDITY_DAYS).contains(&days) {
        Ok(())
    } else {
        Err(DevCaError::InvalidValidity(days))
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// Sets not_before = now - 1 h and not_after = now + `days`.
fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + now + Duration::from_secs(u64::from(days) * 86_400);
}

/// A random positive 16-byte serial number.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // SystemRandom only fails if the OS has no randomness; fall back to the clock then.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn issue_with(
    layout: &Layout,
    ca_cert: &rcgen::Certificate,
    ca_key: &KeyPair,
    id: &Identity,
    validity_days: u32,
) -> Result<TlsFiles, DevCaError> {
    let files = layout.files(id);
    for p in [&files.cert, &files.key] {
        if p.exists() {
            return Err(DevCaError::FileExists(p.clone()));
        }
    }
    let gen_err = |source| DevCaError::Generate {
        path: files.cert.clone(),
        source,
    };
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, id.to_string());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(id.uri().try_into().map_err(gen_err)?)];
    if id.role.is_server() {
        params.subject_alt_names.push(SanType::DnsName(
            id.name.clone().try_into().map_err(gen_err)?,
        ));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, validity_days);
    let cert = params.signed_by(&key, ca_cert, ca_key).map_err(gen_err)?;
    write_file(&files.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&files.cert, cert.pem().as_bytes(), false)?;
    tracing::debug!(identity = %id, cert = %files.cert.display(), "issued certificate");
    Ok(files)
}

/// Writes a new audit signing key for the hub replica `name`:
/// `dir/NAME.key` (PKCS#8 PEM, mode 0600) and its public key (hex)
/// `dir/NAME.pub`, for a hub config's `audit_key_dir` and the nodes'
/// `[[hub.audit_keys]]`. Never overwrites; creates `dir`.
pub fn replica_audit_key(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), DevCaError> {
    if !truc_pki::valid_name(name) {
        return Err(PkiError::InvalidName(name.to_owned()).into());
    }
    fs::create_dir_all(dir).map_err(|source| DevCaError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    write_ed25519_key(&key, &public)?;
    Ok((key, public))
}

fn write_audit_key(layout: &Layout) -> Result<(), DevCaError> {
    write_ed25519_key(&layout.audit_key(), &layout.audit_public_key())
}

/// Writes a new Ed25519 key (PKCS#8 PEM, mode 0600) and its public key
/// (hex) beside it.
fn write_ed25519_key(path: &Path, public_path: &Path) -> Result<(), DevCaError> {
    use ring::signature::KeyPair as _;
    let path = path.to_path_buf();
    let bad = |reason: String| PkiError::BadKey {
        path: path.clone(),
        reason,
    };
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|e| bad(format!("cannot generate ed25519 key: {e}")))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| bad(e.to_string()))?;
    let pem = KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref()),
        &rcgen::PKCS_ED25519,
    )
    .map_err(|e| bad(e.to_string()))?
    .serialize_pem();
    write_file(&path, pem.as_bytes(), true)?;
    let public = format!("{}\n", hex::encode(pair.public_key().as_ref()));
    write_file(public_path, public.as_bytes(), false)
}

/// Writes a new file (never overwriting); private files get mode 0600.
pub(crate) fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), DevCaError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 });
    let mut file = opts.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            DevCaError::FileExists(path.to_path_buf())
        } else {
            DevCaError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| DevCaError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn read_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A further hub replica's files under `layout.dir/replica-NAME/`: its own
/// TLS key and certificate for the hub's identity (`truc://hub/HUB`, the
/// one service name every replica answers to, so a name resolving to
/// several replicas verifies), and its own audit signing key (each replica
/// signs its own log). Files already there are kept. Returns the replica's
/// layout (its CA path is not written: use `layout`'s).
pub fn hub_replica(
    layout: &Layout,
    hub: &str,
    replica: &str,
    validity_days: u32,
) -> Result<Layout, DevCaError> {
    check_validity(validity_days)?;
    let id = Identity::new(Role::Hub, hub)?;
    // The name becomes a directory: the characters of an identity name only.
    Identity::new(Role::Hub, replica)?;
    let sub = Layout::new(layout.dir.join(format!("replica-{replica}")));
    fs::create_dir_all(&sub.dir).map_err(|source| DevCaError::Write {
        path: sub.dir.clone(),
        source,
    })?;
    if !sub.files(&id).cert.exists() {
        let (issuer, ca_key) = load_issuer(layout)?;
        issue_with(&sub, &issuer, &ca_key, &id, validity_days)?;
    }
    if !sub.audit_key().exists() {
        write_audit_key(&sub)?;
    }
    Ok(sub)
}
