#![allow(unused_crate_dependencies)] // Each test file is a crate of its own; none uses every dependency.
//! Any valid envelope survives write → parse, attachments included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use truc_doc::sample;
use truc_edxml::{Memory, Preserved, parse_package, write_package};
use truc_proto::v1::{BusinessKind, OtherInfo, SignerInfo, StaffInfo};

/// One-line text with Vietnamese letters and XML's special characters.
fn line() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ăâđêôơưĂÂĐÊÔƠƯàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệìỉĩíịòỏõóọồổỗốộờởỡớợùủũúụừửữứựỳỷỹýỵ&<>\"'/.,:-]{1,60}"
        .prop_map(|s| {
            let t = s.trim().to_string();
            if t.is_empty() { "x".into() } else { t }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn envelopes_round_trip(
        subject in line(),
        content in line(),
        signer in line(),
        kind in 0i32..4,
        reason in line(),
        priority in 0u32..5,
        files in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..4),
        recipients in 1usize..4,
    ) {
        let to = ["000.00.00.G22", "000.00.00.H41", "000.00.04.G14"];
        let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        let mut e = sample::envelope("000.00.00.H37", &to[..recipients], "12", sample::attachments(&refs));
        e.subject = subject;
        e.content = content;
        e.signer_info = Some(SignerInfo { full_name: signer, ..SignerInfo::default() });
        e.other_info = Some(OtherInfo { priority, ..OtherInfo::default() });
        e.business_kind = kind;
        if kind != BusinessKind::New as i32 {
            e.business_reason = reason;
            e.staff_info = Some(StaffInfo { staff: "Nguyễn Văn A".into(), ..StaffInfo::default() });
        }
        prop_assume!(truc_doc::validate(&e, &truc_doc::Limits::default()).is_empty());
        let extra = Preserved {
            content_ids: (0..files.len()).map(|i| format!("cid-{i}")).collect(),
            ..Preserved::default()
        };
        let mut out = Vec::new();
        write_package(&mut out, &e, &extra, &mut Memory(files.clone())).unwrap();
        let mut sink = Memory::default();
        let p = parse_package(out.as_slice(), &mut sink).unwrap();
        prop_assert_eq!(&p.envelope, &e);
        prop_assert_eq!(&p.extra.content_ids, &extra.content_ids);
        prop_assert_eq!(sink.0, files);
    }
}
