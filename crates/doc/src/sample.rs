//! A valid document to start from, for tests, examples and the benchmark:
//! each changes only what it is about.

use bytes::Bytes;
use truc_proto::v1::{Attachment, DocumentCode, Envelope, Organ, PromulgationInfo};

/// The promulgation date of every sample document.
pub const DATE: &str = "2026/11/28";

/// The notation of every sample document's number.
pub const NOTATION: &str = "UBND-VP";

/// A valid envelope from `from` to `to`, numbered `number/UBND-VP` and dated
/// [`DATE`], carrying `attachments`.
pub fn envelope(from: &str, to: &[&str], number: &str, attachments: Vec<Attachment>) -> Envelope {
    Envelope {
        from: Some(Organ {
            organ_id: from.into(),
            organ_name: "UBND tỉnh Lạng Sơn".into(),
            ..Organ::default()
        }),
        to: to
            .iter()
            .map(|t| Organ {
                organ_id: (*t).into(),
                ..Organ::default()
            })
            .collect(),
        code: Some(DocumentCode {
            code_number: number.into(),
            code_notation: NOTATION.into(),
        }),
        promulgation_info: Some(PromulgationInfo {
            place: "Lạng Sơn".into(),
            promulgation_date: DATE.into(),
        }),
        subject: "V/v báo cáo tình hình kinh tế - xã hội tháng 11".into(),
        document_id: crate::DocumentId::format(from, DATE, number, NOTATION),
        attachments,
        ..Envelope::default()
    }
}

/// A PDF attachment named `name` declaring `size` bytes with digest `sha256`.
pub fn attachment_of(name: &str, size: u64, sha256: Bytes) -> Attachment {
    Attachment {
        name: name.into(),
        content_type: "application/pdf".into(),
        size,
        sha256,
        description: String::new(),
    }
}

/// A PDF attachment named `name` that declares exactly `data`.
pub fn attachment(name: &str, data: &[u8]) -> Attachment {
    let sha256 = crate::chunks::chunk(0, 0, Bytes::copy_from_slice(data)).sha256;
    attachment_of(name, data.len() as u64, sha256)
}

/// PDF attachments `f0.pdf`, `f1.pdf`, ... declaring exactly `files`.
pub fn attachments(files: &[&[u8]]) -> Vec<Attachment> {
    files
        .iter()
        .enumerate()
        .map(|(i, data)| attachment(&format!("f{i}.pdf"), data))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_a_valid_document() {
        let env = envelope(
            "000.00.00.H37",
            &["000.00.00.G22", "000.00.00.A01"],
            "12",
            vec![attachment("a.pdf", b"%PDF-1.7")],
        );
        assert_eq!(env.document_id, "000.00.00.H37,2026/11/28,12/UBND-VP");
        crate::check(&env, &crate::Limits::default()).expect("valid");
        assert_eq!(env.attachments[0].size, 8);
    }
}
