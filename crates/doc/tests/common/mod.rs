//! A valid, fully filled envelope to break in tests.

#![allow(dead_code)]

use bytes::Bytes;
use truc_proto::v1::{
    Attachment, BusinessKind, DocumentCode, DocumentType, Envelope, Organ, OtherInfo,
    PromulgationInfo, ResponseFor, SignerInfo, StaffInfo,
};

/// An organ with every field filled.
pub(crate) fn organ(id: &str, name: &str) -> Organ {
    Organ {
        organ_id: id.to_owned(),
        organization_in_charge: "Chủ tịch".to_owned(),
        organ_name: name.to_owned(),
        organ_add: "Số 1 đường Hoàng Văn Thụ".to_owned(),
        email: "vanthu@example.gov.vn".to_owned(),
        telephone: "0205 3812 345".to_owned(),
        fax: "0205 3812 346".to_owned(),
        website: "https://example.gov.vn".to_owned(),
    }
}

/// An attachment with a 32-byte sha256.
pub(crate) fn attachment(name: &str) -> Attachment {
    Attachment {
        name: name.to_owned(),
        content_type: "application/pdf".to_owned(),
        size: 1024,
        sha256: Bytes::from(vec![7u8; 32]),
        description: "Văn bản gốc".to_owned(),
    }
}

/// A valid envelope from Lạng Sơn to the Government Office, every field filled.
pub(crate) fn valid_envelope() -> Envelope {
    Envelope {
        from: Some(organ("000.00.00.H37", "UBND tỉnh Lạng Sơn")),
        to: vec![organ("000.00.00.G22", "Văn phòng Chính phủ")],
        code: Some(DocumentCode {
            code_number: "123".to_owned(),
            code_notation: "UBND-VP".to_owned(),
        }),
        promulgation_info: Some(PromulgationInfo {
            place: "Lạng Sơn".to_owned(),
            promulgation_date: "2026/11/28".to_owned(),
        }),
        document_type: Some(DocumentType {
            r#type: 18,
            type_name: "Công văn".to_owned(),
            type_detail: "Công văn hành chính".to_owned(),
        }),
        subject: "Về việc báo cáo tình hình kinh tế - xã hội tháng 11 năm 2026".to_owned(),
        content: "Ủy ban nhân dân tỉnh Lạng Sơn kính gửi Văn phòng Chính phủ báo cáo.".to_owned(),
        signer_info: Some(SignerInfo {
            competence: "TM. Ủy ban nhân dân".to_owned(),
            position: "Chủ tịch".to_owned(),
            full_name: "Nguyễn Văn A".to_owned(),
        }),
        due_date: "2026/12/15".to_owned(),
        to_places: vec!["Văn phòng Chính phủ".to_owned(), "Lưu: VT".to_owned()],
        other_info: Some(OtherInfo {
            priority: 1,
            sphere_of_promulgation: "Liên thông văn bản quốc gia".to_owned(),
            typer_notation: "NVA".to_owned(),
            promulgation_amount: 2,
            page_amount: 3,
            appendixes: vec!["Phụ lục I".to_owned()],
        }),
        response_for: vec![ResponseFor {
            organ_id: "000.00.00.G22".to_owned(),
            code: "7816/VPCP-TTĐT".to_owned(),
            promulgation_date: "2015/09/30".to_owned(),
            document_id: "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT".to_owned(),
        }],
        steering_type: 1,
        document_id: "000.00.00.H37,2026/11/28,123/UBND-VP".to_owned(),
        business_kind: BusinessKind::New as i32,
        business_reason: String::new(),
        staff_info: Some(StaffInfo {
            department: "Văn phòng".to_owned(),
            staff: "Trần Thị B".to_owned(),
            mobile: "0912 345 678".to_owned(),
            email: "ttb@example.gov.vn".to_owned(),
        }),
        attachments: vec![attachment("bao-cao-thang-11.pdf")],
        // A document that never was an edXML package keeps nothing beside.
        preserved: Bytes::new(),
    }
}
