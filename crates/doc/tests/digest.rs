#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! envelope_digest: the identity of a send.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{attachment, organ, valid_envelope};
use truc_doc::envelope_digest;
use truc_proto::v1::{BusinessKind, Envelope};

#[test]
fn equal_envelopes_equal_digests() {
    assert_eq!(
        envelope_digest(&valid_envelope()),
        envelope_digest(&valid_envelope().clone())
    );
}

#[test]
fn empty_envelope_is_sha256_of_nothing() {
    let d = envelope_digest(&Envelope::default());
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

type Mutation = (&'static str, fn(&mut Envelope));

#[test]
fn changing_any_field_changes_the_digest() {
    let mutations: &[Mutation] = &[
        ("from", |e| e.from = None),
        ("from.organ_id", |e| {
            e.from.as_mut().unwrap().organ_id = "000.00.00.H41".into()
        }),
        ("from.organization_in_charge", |e| {
            e.from.as_mut().unwrap().organization_in_charge.push('x')
        }),
        ("from.organ_name", |e| {
            e.from.as_mut().unwrap().organ_name.push('x')
        }),
        ("from.organ_add", |e| {
            e.from.as_mut().unwrap().organ_add.push('x')
        }),
        ("from.email", |e| e.from.as_mut().unwrap().email.push('x')),
        ("from.telephone", |e| {
            e.from.as_mut().unwrap().telephone.push('x')
        }),
        ("from.fax", |e| e.from.as_mut().unwrap().fax.push('x')),
        ("from.website", |e| {
            e.from.as_mut().unwrap().website.push('x')
        }),
        ("to +1", |e| {
            e.to.push(organ("000.00.00.H41", "UBND tỉnh Nghệ An"))
        }),
        ("to[0].organ_id", |e| {
            e.to[0].organ_id = "000.00.00.H41".into()
        }),
        ("to[0].organ_name", |e| e.to[0].organ_name.push('x')),
        ("code.code_number", |e| {
            e.code.as_mut().unwrap().code_number.push('4')
        }),
        ("code.code_notation", |e| {
            e.code.as_mut().unwrap().code_notation.push('x')
        }),
        ("promulgation_info.place", |e| {
            e.promulgation_info.as_mut().unwrap().place.push('x')
        }),
        ("promulgation_info.promulgation_date", |e| {
            e.promulgation_info.as_mut().unwrap().promulgation_date = "2026/11/29".into()
        }),
        ("document_type.type", |e| {
            e.document_type.as_mut().unwrap().r#type = 19
        }),
        ("document_type.type_name", |e| {
            e.document_type.as_mut().unwrap().type_name.push('x')
        }),
        ("document_type.type_detail", |e| {
            e.document_type.as_mut().unwrap().type_detail.push('x')
        }),
        ("subject", |e| e.subject.push('.')),
        ("content", |e| e.content.push('.')),
        ("signer_info.competence", |e| {
            e.signer_info.as_mut().unwrap().competence.push('x')
        }),
        ("signer_info.position", |e| {
            e.signer_info.as_mut().unwrap().position.push('x')
        }),
        ("signer_info.full_name", |e| {
            e.signer_info.as_mut().unwrap().full_name.push('x')
        }),
        ("due_date", |e| e.due_date = "2026/12/16".into()),
        ("to_places", |e| e.to_places.swap(0, 1)),
        ("other_info.priority", |e| {
            e.other_info.as_mut().unwrap().priority = 2
        }),
        ("other_info.sphere_of_promulgation", |e| {
            e.other_info
                .as_mut()
                .unwrap()
                .sphere_of_promulgation
                .push('x')
        }),
        ("other_info.typer_notation", |e| {
            e.other_info.as_mut().unwrap().typer_notation.push('x')
        }),
        ("other_info.promulgation_amount", |e| {
            e.other_info.as_mut().unwrap().promulgation_amount = 3
        }),
        ("other_info.page_amount", |e| {
            e.other_info.as_mut().unwrap().page_amount = 4
        }),
        ("other_info.appendixes", |e| {
            e.other_info.as_mut().unwrap().appendixes.clear()
        }),
        ("response_for[0].organ_id", |e| {
            e.response_for[0].organ_id = "000.00.00.H41".into()
        }),
        ("response_for[0].code", |e| e.response_for[0].code.push('x')),
        ("response_for[0].promulgation_date", |e| {
            e.response_for[0].promulgation_date = "2015/10/01".into()
        }),
        ("response_for[0].document_id", |e| {
            e.response_for[0].document_id.push('x')
        }),
        ("steering_type", |e| e.steering_type = 2),
        ("document_id", |e| e.document_id.push('x')),
        ("business_kind", |e| {
            e.business_kind = BusinessKind::Update as i32
        }),
        ("business_reason", |e| {
            e.business_reason = "Đính chính".into()
        }),
        ("staff_info.department", |e| {
            e.staff_info.as_mut().unwrap().department.push('x')
        }),
        ("staff_info.staff", |e| {
            e.staff_info.as_mut().unwrap().staff.push('x')
        }),
        ("staff_info.mobile", |e| {
            e.staff_info.as_mut().unwrap().mobile.push('x')
        }),
        ("staff_info.email", |e| {
            e.staff_info.as_mut().unwrap().email.push('x')
        }),
        ("attachments +1", |e| {
            e.attachments.push(attachment("phu-luc.pdf"))
        }),
        ("attachments[0].name", |e| e.attachments[0].name.push('x')),
        ("attachments[0].content_type", |e| {
            e.attachments[0].content_type = "text/plain".into()
        }),
        ("attachments[0].size", |e| e.attachments[0].size += 1),
        ("attachments[0].sha256", |e| {
            e.attachments[0].sha256 = Bytes::from(vec![8u8; 32])
        }),
        ("attachments[0].description", |e| {
            e.attachments[0].description.push('x')
        }),
    ];
    let base = valid_envelope();
    let base_digest = envelope_digest(&base);
    let mut seen = std::collections::HashMap::new();
    seen.insert(base_digest, "base");
    for (name, mutate) in mutations {
        let mut e = base.clone();
        mutate(&mut e);
        assert_ne!(e, base, "{name} did not change the envelope");
        let d = envelope_digest(&e);
        assert_ne!(d, base_digest, "{name}");
        if let Some(other) = seen.insert(d, name) {
            panic!("{name} and {other} give the same digest");
        }
        // Deterministic.
        assert_eq!(d, envelope_digest(&e.clone()), "{name}");
    }
}
