#![allow(unused_crate_dependencies)] // Each test file is a crate of its own; none uses every dependency.
//! Hand-written edXML fixtures: each business type, a status package, and
//! malformed packages refused with their N./R. codes; round trips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use truc_edxml::{Error, Memory, parse_package, parse_status, write_package, write_status};
use truc_proto::v1::BusinessKind;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(name: &str) -> String {
    String::from_utf8(fixture(name)).expect("utf-8 fixture")
}

fn parse(name: &str) -> Result<(truc_edxml::Package, Memory), Error> {
    let mut sink = Memory::default();
    let p = parse_package(fixture(name).as_slice(), &mut sink)?;
    Ok((p, sink))
}

#[test]
fn a_new_document_maps_to_the_envelope() {
    let (p, sink) = parse("document-new.edxml").expect("valid package");
    let e = &p.envelope;
    assert_eq!(
        e.from.as_ref().map(|f| f.organ_id.as_str()),
        Some("000.00.00.H37")
    );
    assert_eq!(
        e.from.as_ref().map(|f| f.organ_name.as_str()),
        Some("Ủy ban nhân dân tỉnh Lạng Sơn")
    );
    let to: Vec<&str> = e.to.iter().map(|o| o.organ_id.as_str()).collect();
    assert_eq!(to, ["000.00.00.G22", "000.00.00.H41", "000.00.04.G14"]);
    assert_eq!(
        e.subject,
        "V/v báo cáo tình hình kinh tế - xã hội tháng 11 & kế hoạch tháng 12"
    );
    assert_eq!(e.document_id, "000.00.00.H37,2026/11/28,4838/UBND-VP");
    assert_eq!(e.business_kind, BusinessKind::New as i32);
    assert_eq!(e.document_type.as_ref().map(|t| t.r#type), Some(18));
    assert_eq!(e.other_info.as_ref().map(|o| o.priority), Some(1));
    assert_eq!(
        e.other_info.as_ref().map(|o| o.appendixes.clone()),
        Some(vec!["Phụ lục 1: Số liệu chi tiết".to_string()])
    );
    assert_eq!(e.to_places, ["Như trên", "Lưu: VT, KT"]);
    assert_eq!(e.due_date, "2026/12/05");
    assert_eq!(e.steering_type, 1);

    // Attachments: decoded bytes in the sink, size and digest in the envelope.
    assert_eq!(
        sink.0,
        vec![fixture("attachment-1.pdf"), fixture("attachment-2.txt")]
    );
    assert_eq!(e.attachments.len(), 2);
    assert_eq!(e.attachments[0].name, "Văn bản 4838.pdf");
    assert_eq!(e.attachments[0].description, "Văn bản chính");
    assert_eq!(e.attachments[1].content_type, "text/plain");
    assert_eq!(
        e.attachments[0].size,
        fixture("attachment-1.pdf").len() as u64
    );
    let sha = ring::digest::digest(&ring::digest::SHA256, &fixture("attachment-2.txt"));
    assert_eq!(e.attachments[1].sha256.as_ref(), sha.as_ref());
    assert_eq!(p.extra.content_ids, ["vanban-4838.pdf", "phuluc-1.txt"]);
    assert_eq!(p.attachments[1].content_id, "phuluc-1.txt");

    // The sidecar: trace, the signature and unknown elements as they came.
    assert_eq!(p.extra.trace.len(), 1);
    assert_eq!(p.extra.trace[0].timestamp, "2026/11/28 09:15:00");
    let raw = text("document-new.edxml");
    let sig = p.extra.signature.as_deref().expect("signature kept");
    assert!(
        sig.starts_with("<edXML:DigitalSignature>") && sig.ends_with("</edXML:DigitalSignature>")
    );
    assert!(raw.contains(sig), "signature byte for byte");
    let unknown: Vec<(&str, &str)> = p
        .extra
        .unknown
        .iter()
        .map(|f| (f.parent.as_str(), f.xml.as_str()))
        .collect();
    assert_eq!(unknown.len(), 2, "{unknown:?}");
    assert_eq!(
        unknown[0],
        (
            "edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To[1]",
            "<edXML:VendorNote>ghi chú của nhà cung cấp</edXML:VendorNote>"
        )
    );
    assert_eq!(
        unknown[1].0,
        "edXML/edXMLEnvelope/edXMLHeader/MessageHeader"
    );
    assert!(unknown[1].1.starts_with("<edXML:Extension"));
    assert!(raw.contains(unknown[1].1), "unknown element byte for byte");
}

fn round_trip(name: &str) {
    let (p, sink) = parse(name).expect("valid package");
    let mut out = Vec::new();
    let mut source = sink.clone();
    write_package(&mut out, &p.envelope, &p.extra, &mut source).expect("write");
    let written = String::from_utf8(out.clone()).expect("utf-8");
    for f in &p.extra.unknown {
        assert!(written.contains(&f.xml), "{name}: {} kept", f.xml);
    }
    if let Some(sig) = &p.extra.signature {
        assert!(written.contains(sig.as_str()), "{name}: signature kept");
    }
    assert!(written.contains("xmlns:edXML=\"http://www.mic.gov.vn/TBT/QCVN_102_2016\""));
    let mut again = Memory::default();
    let q = parse_package(out.as_slice(), &mut again)
        .unwrap_or_else(|e| panic!("{name}: written package re-parses: {e}\n{written}"));
    assert_eq!(q.envelope, p.envelope, "{name}");
    assert_eq!(q.extra, p.extra, "{name}");
    assert_eq!(q.attachments, p.attachments, "{name}");
    assert_eq!(again, sink, "{name}");
}

#[test]
fn every_business_type_round_trips() {
    for (name, kind) in [
        ("document-new.edxml", BusinessKind::New),
        ("document-recall.edxml", BusinessKind::Recall),
        ("document-update.edxml", BusinessKind::Update),
        ("document-replace.edxml", BusinessKind::Replace),
    ] {
        let (p, _) = parse(name).expect(name);
        assert_eq!(p.envelope.business_kind, kind as i32, "{name}");
        if kind != BusinessKind::New {
            assert!(!p.envelope.business_reason.is_empty(), "{name}");
            let staff = p.envelope.staff_info.as_ref().expect("staff info");
            assert_eq!(staff.staff, "Nguyễn Thị Hoà");
            // Paper is not an envelope field: kept raw under Bussiness.
            assert!(p.extra.unknown.iter().any(
                |f| f.parent.ends_with("/Bussiness") && f.xml == "<edXML:Paper>0</edXML:Paper>"
            ));
        }
        round_trip(name);
    }
}

#[test]
fn a_status_package_maps_to_a_status_update_and_back() {
    let s = parse_status(&fixture("status-accepted.edxml")).expect("valid status");
    let u = &s.update;
    assert_eq!(u.sender, "000.00.00.H37");
    assert_eq!(u.document_id, "000.00.00.H37,2026/11/28,4838/UBND-VP");
    assert_eq!(u.recipient, "000.00.00.G22");
    let ev = u.event.as_ref().expect("event");
    assert_eq!(ev.code, "03");
    assert_eq!(ev.by, "000.00.00.G22");
    assert_eq!(
        ev.description,
        "Đã tiếp nhận văn bản điện tử số 4838/UBND-VP"
    );
    // 07:05:27 in Hà Nội is 00:05:27 UTC.
    assert_eq!(ev.unix_ms, 1_796_083_527_000);
    assert_eq!(
        ev.staff.as_ref().map(|s| s.staff.as_str()),
        Some("Trần Văn Đức")
    );
    assert_eq!(s.from.organ_name, "Văn phòng Chính phủ");

    let mut out = Vec::new();
    write_status(&mut out, &s).expect("write");
    let again = parse_status(&out).expect("written status re-parses");
    assert_eq!(again, s);
    // A document parser refuses it, naming why.
    let err = parse_package(
        fixture("status-accepted.edxml").as_slice(),
        &mut Memory::default(),
    )
    .expect_err("not a document");
    assert_eq!(err.codes(), ["R.MessageType"]);
}

fn refused(name: &str) -> Vec<&'static str> {
    let bytes = fixture(name);
    let err = if name.starts_with("malformed-status") {
        parse_status(&bytes).expect_err(name)
    } else {
        parse_package(bytes.as_slice(), &mut Memory::default()).expect_err(name)
    };
    err.codes()
}

#[test]
fn malformed_packages_are_refused_with_their_codes() {
    for (name, code) in [
        ("malformed-missing-subject.edxml", "N.Subject"),
        (
            "malformed-bad-date.edxml",
            "R.PromulgationInfo.PromulgationDate",
        ),
        ("malformed-bad-base64.edxml", "R.Attachment.Content"),
        ("malformed-wrong-namespace.edxml", "R.Namespace"),
        ("malformed-truncated.edxml", "R.Xml"),
        ("malformed-not-xml.edxml", "R.Xml"),
        ("malformed-recall-without-reason.edxml", "N.BusinessReason"),
        ("malformed-bad-priority.edxml", "R.OtherInfo.Priority"),
        ("malformed-status-bad-code.edxml", "R.StatusCode"),
        ("malformed-status-bad-timestamp.edxml", "R.Status.Timestamp"),
    ] {
        let codes = refused(name);
        assert!(codes.contains(&code), "{name}: {codes:?} lacks {code}");
    }
}

#[test]
fn a_sink_failure_stops_the_parse() {
    struct Failing;
    impl truc_edxml::AttachmentSink for Failing {
        fn begin(&mut self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write(&mut self, _: usize, _: &[u8]) -> std::io::Result<()> {
            Err(std::io::Error::other("disk full"))
        }
        fn end(&mut self, _: &truc_edxml::AttachmentMeta) -> std::io::Result<()> {
            Ok(())
        }
    }
    let err = parse_package(fixture("document-new.edxml").as_slice(), &mut Failing)
        .expect_err("sink failed");
    assert!(matches!(err, Error::Io(_)), "{err}");
}

#[test]
fn attachment_limits_are_enforced_while_decoding() {
    let opts = truc_edxml::Options {
        limits: truc_doc::Limits {
            max_attachment_bytes: 100,
            ..truc_doc::Limits::default()
        },
        ..truc_edxml::Options::default()
    };
    let mut sink = Memory::default();
    let err =
        truc_edxml::parse_package_with(fixture("document-new.edxml").as_slice(), &mut sink, &opts)
            .expect_err("over the limit");
    assert_eq!(err.codes(), ["R.Attachment.Size"]);
    assert!(sink.0.iter().all(|a| a.len() <= 100));
}

#[test]
fn a_source_that_differs_from_the_envelope_fails_the_write() {
    let (p, mut sink) = parse("document-new.edxml").expect("valid");
    sink.0[0].push(b'x');
    let err = write_package(Vec::new(), &p.envelope, &p.extra, &mut sink).expect_err("mismatch");
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData),
        "{err}"
    );
}

/// Attachment content bypasses the text buffer: a 2 MiB attachment parses
/// with a 1 KiB text limit, arriving in the sink in pieces, while a 2 KiB
/// subject is refused under the same limit.
#[test]
fn attachments_stream_past_the_text_limit() {
    let data: Vec<u8> = (0..2u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    let envelope = truc_doc::sample::envelope(
        "000.00.00.H37",
        &["000.00.00.G22"],
        "7",
        truc_doc::sample::attachments(&[&data]),
    );
    let mut out = Vec::new();
    write_package(
        &mut out,
        &envelope,
        &truc_edxml::Preserved::default(),
        &mut Memory(vec![data.clone()]),
    )
    .expect("write");
    struct Pieces(usize, usize, Vec<u8>);
    impl truc_edxml::AttachmentSink for Pieces {
        fn begin(&mut self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write(&mut self, _: usize, d: &[u8]) -> std::io::Result<()> {
            self.0 += 1;
            self.1 = self.1.max(d.len());
            self.2.extend_from_slice(d);
            Ok(())
        }
        fn end(&mut self, _: &truc_edxml::AttachmentMeta) -> std::io::Result<()> {
            Ok(())
        }
    }
    let opts = truc_edxml::Options {
        max_text_bytes: 1024,
        ..truc_edxml::Options::default()
    };
    let mut sink = Pieces(0, 0, Vec::new());
    let p = truc_edxml::parse_package_with(out.as_slice(), &mut sink, &opts).expect("parses");
    assert_eq!(sink.2, data);
    assert!(sink.0 > 10, "{} pieces", sink.0);
    assert!(sink.1 <= 64 * 1024, "largest piece {} bytes", sink.1);
    assert_eq!(p.envelope, envelope);

    let mut long = envelope.clone();
    long.subject = "x".repeat(2048);
    long.attachments.clear();
    let mut out = Vec::new();
    write_package(
        &mut out,
        &long,
        &truc_edxml::Preserved::default(),
        &mut Memory::default(),
    )
    .expect("write");
    let err = truc_edxml::parse_package_with(out.as_slice(), &mut Memory::default(), &opts)
        .expect_err("text over the limit");
    assert_eq!(err.codes(), ["R.Xml"]);
}
