#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! `truc edxml check` and `truc edxml status` with the real binary, on the
//! edXML crate's hand-written fixtures.

mod common;

use std::path::PathBuf;

use common::*;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../edxml/tests/fixtures")
        .join(name)
        .to_str()
        .expect("utf-8")
        .to_string()
}

#[test]
fn check_answers_0_valid_1_invalid_with_codes_2_unreadable() {
    for name in [
        "document-new.edxml",
        "document-recall.edxml",
        "document-update.edxml",
        "document-replace.edxml",
        "status-accepted.edxml",
    ] {
        let out = run(&["edxml", "check", &fixture(name)]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stdout));
        assert!(text(&out.stdout).contains("valid"), "{name}");
    }
    for (name, code) in [
        ("malformed-missing-subject.edxml", "N.Subject"),
        (
            "malformed-bad-date.edxml",
            "R.PromulgationInfo.PromulgationDate",
        ),
        ("malformed-bad-base64.edxml", "R.Attachment.Content"),
        ("malformed-wrong-namespace.edxml", "R.Namespace"),
        ("malformed-truncated.edxml", "R.Xml"),
        ("malformed-status-bad-code.edxml", "R.StatusCode"),
    ] {
        let out = run(&["edxml", "check", &fixture(name)]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            text(&out.stdout).contains(code),
            "{name}: {}",
            text(&out.stdout)
        );
    }
    let out = run(&["edxml", "check", &fixture("no-such-file.edxml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no-such-file.edxml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn status_write_then_read() {
    let dir = tempfile::tempdir().expect("dir");
    let out_path = dir.path().join("status.edxml");
    let out = out_path.to_str().expect("utf-8");
    let write = run(&[
        "edxml",
        "status",
        "write",
        "--as",
        "000.00.00.G22",
        "--from",
        "000.00.00.H37",
        "--document-id",
        "000.00.00.H37,2026/11/28,4838/UBND-VP",
        "--status",
        "03",
        "--description",
        "Đã tiếp nhận",
        "--staff",
        "Trần Văn Đức",
        "--out",
        out,
    ]);
    assert!(write.status.success(), "{}", text(&write.stderr));
    let read = run(&["edxml", "status", "read", out]);
    assert!(read.status.success(), "{}", text(&read.stderr));
    let shown = text(&read.stdout);
    assert!(shown.starts_with("03 "), "{shown}");
    assert!(
        shown.contains("000.00.00.H37,2026/11/28,4838/UBND-VP") && shown.contains("Đã tiếp nhận"),
        "{shown}"
    );
    assert!(shown.contains("Trần Văn Đức"), "{shown}");
    // Never over an existing file; a bad status code is a usage error.
    let again = run(&[
        "edxml",
        "status",
        "write",
        "--as",
        "000.00.00.G22",
        "--from",
        "000.00.00.H37",
        "--document-id",
        "000.00.00.H37,2026/11/28,4838/UBND-VP",
        "--status",
        "03",
        "--out",
        out,
    ]);
    assert_eq!(again.status.code(), Some(2));
    let bad = run(&[
        "edxml",
        "status",
        "write",
        "--as",
        "000.00.00.G22",
        "--from",
        "000.00.00.H37",
        "--document-id",
        "000.00.00.H37,2026/11/28,4838/UBND-VP",
        "--status",
        "99",
        "--out",
        dir.path().join("bad.edxml").to_str().expect("utf-8"),
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}

/// A package's document sent with `truc send --edxml` arrives, and `truc
/// fetch --edxml` gives it back as a package with the same envelope,
/// attachments, signature and unknown elements.
#[test]
fn send_edxml_then_fetch_edxml_between_two_nodes() {
    let dir = tempfile::tempdir().expect("dir");
    let data = demo_files(dir.path(), "1");
    let p = |f: &str| data.join(f).to_str().expect("utf-8").to_string();
    let _d = Deployment::spawn(&data);
    let up = call_until_up(
        &data.join("client-langson-dms.toml"),
        "000.00.00.H37",
        "000.00.00.G22/citizen-lookup/v1",
    );
    assert!(up.status.success(), "{}", text(&up.stderr));

    // The fixture, addressed to the one agency the demo's other node serves.
    let mut sink = truc_edxml::Memory::default();
    let bytes = std::fs::read(fixture("document-new.edxml")).expect("fixture");
    let mut package = truc_edxml::parse_package(bytes.as_slice(), &mut sink).expect("fixture");
    package.envelope.to.truncate(1);
    package.extra.unknown.retain(|f| !f.parent.contains("/To["));
    let doc = package.envelope.document_id.clone();
    let sent_path = dir.path().join("sent.edxml");
    let file = std::fs::File::create(&sent_path).expect("create");
    truc_edxml::write_package(&file, &package.envelope, &package.extra, &mut sink.clone())
        .expect("write");
    let send = run(&[
        "send",
        "--config",
        &p("client-langson-dms.toml"),
        "--as",
        "000.00.00.H37",
        "--edxml",
        sent_path.to_str().expect("utf-8"),
    ]);
    assert!(
        send.status.success(),
        "{}{}",
        text(&send.stdout),
        text(&send.stderr)
    );
    assert!(text(&send.stdout).contains(&doc), "{}", text(&send.stdout));

    let fetched = dir.path().join("fetched.edxml");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = run(&[
            "fetch",
            "--config",
            &p("client-vpcp-dms.toml"),
            "--as",
            "000.00.00.G22",
            "--from",
            "000.00.00.H37",
            "--document-id",
            &doc,
            "--edxml",
            fetched.to_str().expect("utf-8"),
        ]);
        if out.status.success() {
            break;
        }
        // Not there yet (NOT_FOUND) until the hub has delivered it.
        assert!(
            std::time::Instant::now() < deadline,
            "never fetched: {}",
            text(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let check = run(&["edxml", "check", fetched.to_str().expect("utf-8")]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    let mut got = truc_edxml::Memory::default();
    let bytes = std::fs::read(&fetched).expect("fetched");
    let back = truc_edxml::parse_package(bytes.as_slice(), &mut got).expect("fetched package");
    assert_eq!(back.envelope, package.envelope);
    assert_eq!(got, sink);
    // The sender's signature and vendor elements came along, as they were.
    assert!(package.extra.signature.is_some() && !package.extra.unknown.is_empty());
    assert_eq!(back.extra.signature, package.extra.signature);
    assert_eq!(back.extra.unknown, package.extra.unknown);
    assert_eq!(back.extra.trace, package.extra.trace);
    // A second fetch never overwrites the package.
    let again = run(&[
        "fetch",
        "--config",
        &p("client-vpcp-dms.toml"),
        "--as",
        "000.00.00.G22",
        "--from",
        "000.00.00.H37",
        "--document-id",
        &doc,
        "--edxml",
        fetched.to_str().expect("utf-8"),
    ]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stderr));
}
