//! Tests: the files the CA writes, what it refuses, and the audit key round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::*;
use truc_pki::load_audit_key;

use crate::testing::{identities as ids, options as opts};

fn cert_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_files_and_refuses_twice() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pki");
    let layout = init(&root, &opts()).unwrap();
    assert!(layout.ca_cert().is_file());
    assert_eq!(mode(&layout.ca_key()), 0o600);
    assert_eq!(mode(&layout.audit_key()), 0o600);
    for id in ids() {
        let files = layout.files(&id);
        assert_eq!(files.ca, layout.ca_cert());
        assert!(files.cert.ends_with(format!("{}-{}.crt", id.role, id.name)));
        assert_eq!(mode(&files.key), 0o600, "{}", files.key.display());
        assert_eq!(Identity::from_cert_der(&cert_der(&files.cert)).unwrap(), id);
    }
    // The CA certificate has no identity.
    assert!(Identity::from_cert_der(&cert_der(&layout.ca_cert())).is_err());

    let err = init(&root, &opts()).unwrap_err();
    assert!(matches!(err, DevCaError::CaExists(_)), "{err}");
    assert!(err.to_string().contains("ca.crt"), "{err}");
}

#[test]
fn init_rejects_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.nodes.push("Bad_Name".into());
    assert!(matches!(
        init(dir.path(), &o),
        Err(DevCaError::Pki(PkiError::InvalidName(_)))
    ));
    let mut o = opts();
    o.nodes.push("hub".into());
    assert!(matches!(
        init(dir.path(), &o),
        Err(DevCaError::DuplicateName(_))
    ));
    let mut o = opts();
    o.validity_days = 0;
    assert!(init(dir.path(), &o).is_err());
    assert!(!Layout::new(dir.path()).ca_cert().exists());
}

#[test]
fn audit_key_round_trip() {
    use ring::signature::KeyPair;
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let key = load_audit_key(&layout.audit_key()).unwrap();
    let public = std::fs::read_to_string(layout.audit_public_key()).unwrap();
    assert_eq!(
        public,
        format!("{}\n", hex::encode(key.public_key().as_ref()))
    );
    let sig = key.sign(b"entry");
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        hex::decode(public.trim()).unwrap(),
    )
    .verify(b"entry", sig.as_ref())
    .unwrap();
    let err = load_audit_key(&layout.ca_cert()).unwrap_err();
    assert!(err.to_string().contains("ca.crt"), "{err}");
}

#[test]
fn issue_refuses_a_foreign_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(&dir.path().join("a"), &opts()).unwrap();
    let b = init(&dir.path().join("b"), &opts()).unwrap();
    std::fs::remove_file(a.ca_key()).unwrap();
    std::fs::copy(b.ca_key(), a.ca_key()).unwrap();
    let id = Identity::new(Role::Client, "x").unwrap();
    let err = issue(&a, &id, 1).unwrap_err();
    assert!(err.to_string().contains("ca.crt"), "{err}");
}

/// Not-after minus not-before of a certificate, in seconds.
fn validity_secs(path: &Path) -> i64 {
    let der = cert_der(path);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let v = cert.validity();
    v.not_after.timestamp() - v.not_before.timestamp()
}

#[test]
fn participant_certificates_last_at_most_a_year() {
    let dir = tempfile::tempdir().unwrap();
    // Ten years for a node certificate was accepted before.
    let mut o = opts();
    o.validity_days = 3650;
    let err = init(&dir.path().join("long"), &o).unwrap_err();
    assert!(matches!(err, DevCaError::InvalidValidity(3650)), "{err}");
    assert!(!dir.path().join("long").join("ca.crt").exists());

    let mut o = opts();
    o.validity_days = DEFAULT_LEAF_VALIDITY_DAYS;
    let layout = init(&dir.path().join("pki"), &o).unwrap();
    let year = 366 * 86_400 + 3600;
    for id in ids() {
        let secs = validity_secs(&layout.files(&id).cert);
        assert!(secs <= year, "{id}: {secs} s");
    }
    // The CA outlives its leaves, so they can be reissued from it.
    assert!(validity_secs(&layout.ca_cert()) >= 3650 * 86_400);
    let late = Identity::new(Role::Client, "late").unwrap();
    assert!(matches!(
        issue(&layout, &late, MAX_LEAF_VALIDITY_DAYS + 1),
        Err(DevCaError::InvalidValidity(_))
    ));
    let files = issue(&layout, &late, DEFAULT_LEAF_VALIDITY_DAYS).unwrap();
    assert!(validity_secs(&files.cert) <= year);
}

#[test]
fn issue_refuses_a_node_named_like_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let fake_hub = Identity::new(Role::Node, "hub").unwrap();
    let err = issue(&layout, &fake_hub, 30).unwrap_err();
    assert!(
        matches!(err, DevCaError::DuplicateName(ref n) if n == "hub"),
        "{err}"
    );
    assert!(!layout.files(&fake_hub).cert.exists());
    // Nor a hub named like an existing node.
    let fake_node = Identity::new(Role::Hub, "node2").unwrap();
    assert!(matches!(
        issue(&layout, &fake_node, 30),
        Err(DevCaError::DuplicateName(_))
    ));
    // Other names are still issued.
    issue(&layout, &Identity::new(Role::Node, "node3").unwrap(), 30).unwrap();
}

#[test]
fn every_node_gets_its_own_witness_key() {
    use ring::signature::KeyPair;
    let dir = tempfile::tempdir().unwrap();
    let layout = init(dir.path(), &opts()).unwrap();
    let node = opts().nodes[0].clone();
    let key = load_audit_key(&layout.witness_key(&node)).unwrap();
    let public = std::fs::read_to_string(layout.witness_public_key(&node)).unwrap();
    assert_eq!(public.trim(), hex::encode(key.public_key().as_ref()));
    assert_eq!(mode(&layout.witness_key(&node)), 0o600);
    let audit = std::fs::read_to_string(layout.audit_public_key()).unwrap();
    assert_ne!(public, audit);
    // A node issued later gets one too; reissuing keeps it.
    let id = Identity::new(Role::Node, "later").unwrap();
    issue(&layout, &id, 1).unwrap();
    let later = std::fs::read_to_string(layout.witness_public_key("later")).unwrap();
    std::fs::remove_file(layout.files(&id).cert).unwrap();
    std::fs::remove_file(layout.files(&id).key).unwrap();
    issue(&layout, &id, 1).unwrap();
    assert_eq!(
        std::fs::read_to_string(layout.witness_public_key("later")).unwrap(),
        later
    );
    assert!(!layout.witness_key(&opts().admin).exists());
}

#[test]
fn revoke_writes_a_list_rustls_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let layout = init(&dir.path().join("a"), &opts()).unwrap();
    let other = init(&dir.path().join("b"), &opts()).unwrap();
    let empty = truc_pki::CrlSet::load(&[layout.crl()]).unwrap();
    assert_eq!(empty.info[0].revoked, 0);
    let hub = layout.files(&ids()[0]);
    assert_eq!(hub.crls, vec![layout.crl()]);
    truc_pki::server_config(&hub).expect("rustls takes the empty list");

    let node = layout.files(&ids()[1]);
    let out = revoke(
        &layout,
        &RevokeTarget::Cert(node.cert.clone()),
        Some(RevocationReason::KeyCompromise),
    )
    .unwrap();
    assert!(!out.already && out.total == 1, "{out:?}");
    let admin = layout.files(&ids()[3]);
    let out = revoke(&layout, &RevokeTarget::Cert(admin.cert.clone()), None).unwrap();
    assert_eq!(out.total, 2, "the first entry is kept");
    let set = truc_pki::CrlSet::load(&[layout.crl()]).unwrap();
    assert!(set.revokes(&cert_der(&node.cert)));
    assert!(set.revokes(&cert_der(&admin.cert)));
    assert!(!set.revokes(&cert_der(&hub.cert)));
    let next = set.info[0].next_update.unwrap();
    assert!(next - set.info[0].this_update >= i64::from(CRL_VALIDITY_DAYS) * 86_400 - 5);
    truc_pki::server_config(&hub).expect("rustls takes the list");
    truc_pki::client_config(&hub).expect("and so do clients");

    // A certificate of another CA, a serial that is not hex, no CA: refused.
    let foreign = other.files(&ids()[1]).cert;
    let e = revoke(&layout, &RevokeTarget::Cert(foreign), None).unwrap_err();
    assert!(e.to_string().contains("not by this CA"), "{e}");
    let e = revoke(&layout, &RevokeTarget::Serial("zz".into()), None).unwrap_err();
    assert!(matches!(e, DevCaError::BadSerial(_)), "{e}");
    let e = revoke(
        &Layout::new(dir.path().join("none")),
        &RevokeTarget::Serial("01".into()),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("ca.crt"), "{e}");
    assert_eq!(
        parse_reason("superseded"),
        Some(RevocationReason::Superseded)
    );
    assert!(REASONS.iter().all(|r| parse_reason(r).is_some()));
    assert_eq!(parse_reason("bored"), None);
}
