#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! Why a data call is made (purpose, end user, case): checked against the
//! grant, recorded at the hub (the end user as a keyed hash where the
//! registry says so) and at both nodes, filterable in ListRecords, passed
//! to the provider's backend.

use std::sync::Arc;

use tonic::{Code, Request};
use truc_client::CallOptions;
use truc_pki::Role;
use truc_proto::v1::{DataRequest, ListRecordsRequest, audit_client::AuditClient};
use truc_tests::*;

const PURPOSE: &str = "giải quyết thủ tục hành chính";
const USER: &str = "Nguyễn Thị Hồng Nhung 079123456789";
const CASE: &str = "HS-2026/000042";

/// What a backend saw of one call: the metadata (percent-decoded) and the
/// request's fields, each purpose, end user, case.
type Seen = ([Option<String>; 3], [String; 3]);

/// The metadata and fields a backend sees of one call.
fn look(request: &Request<DataRequest>) -> Seen {
    let md = |k: &str| {
        request
            .metadata()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(percent_decode)
    };
    let metadata = [md("truc-purpose"), md("truc-end-user"), md("truc-case")];
    let req = request.get_ref();
    let fields = [req.purpose.clone(), req.end_user.clone(), req.case.clone()];
    (metadata, fields)
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Every file under `dir`, read whole.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).expect("read")));
            }
        }
    }
    out
}

fn contains(files: &[(std::path::PathBuf, Vec<u8>)], needle: &str) -> bool {
    files
        .iter()
        .any(|(_, b)| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

#[tokio::test]
async fn why_a_call_is_made_is_checked_recorded_filterable_and_reaches_the_backend() {
    let backend = Arc::new(Recorder::new(look));
    let mut c = start_with(BackendKind::Custom(backend.clone()), 4096).await;
    // The hub again, with the province's grant requiring the purpose and
    // end users hashed under a key. Without the key it does not start.
    let registry = c.deployment.files.registry.clone();
    let hub_config = c.deployment.files.hub_config.clone();
    let err = c
        .deployment
        .restart_hub(async || {
            let text = std::fs::read_to_string(&registry).expect("registry");
            std::fs::write(&registry, format!("hash_end_user = true\n{text}")).expect("write");
        })
        .await
        .expect_err("hashing end users needs a key");
    assert!(err.to_string().contains("end_user_key"), "{err}");
    c.deployment
        .restart_hub(async || {
            let text = std::fs::read_to_string(&registry).expect("registry");
            let grant = format!("client = \"{H37}\"\nservices = [\"{CITIZEN_LOOKUP}\"]\n");
            assert!(text.contains(&grant), "{text}");
            let text = text.replace(&grant, &format!("{grant}purposes = [\"{PURPOSE}\"]\n"));
            std::fs::write(&registry, text).expect("write");
            let dir = hub_config.parent().expect("dir");
            std::fs::write(dir.join("end_user.key"), "5a".repeat(32)).expect("key");
            let text = std::fs::read_to_string(&hub_config).expect("hub config");
            std::fs::write(
                &hub_config,
                format!("end_user_key = \"end_user.key\"\n{text}"),
            )
            .expect("write");
        })
        .await
        .expect("hub restarted");

    let province = c.client(PROVINCE_NODE, PROVINCE_CLIENT);
    let body = || call(H37, CITIZEN_LOOKUP, r#"{"id":"001089012345"}"#);
    let why = |purpose: &str| {
        CallOptions::default()
            .purpose(purpose)
            .end_user(USER)
            .case(CASE)
    };
    // No purpose, or one the grant does not list: refused by the hub.
    for purpose in ["", "tò mò"] {
        let err = province
            .call_with(body(), &why(purpose))
            .await
            .expect_err("refused");
        let status = err.status().expect("a status");
        assert_eq!(status.code(), Code::PermissionDenied, "{purpose:?}: {err}");
    }
    // Hostile values never leave the client's node.
    for bad in [
        why(PURPOSE).end_user("a\nb"),
        why(PURPOSE).case("x".repeat(101)),
        why(&"p".repeat(1000)),
    ] {
        let err = province.call_with(body(), &bad).await.expect_err("refused");
        let status = err.status().expect("a status");
        assert_eq!(status.code(), Code::InvalidArgument, "{err}");
    }
    let ok = province
        .call_with(body(), &why(PURPOSE))
        .await
        .expect("a call with its purpose");
    let tx = ok.receipt.expect("receipt").transaction_id;

    // The backend got the three values, as metadata and in the request.
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "only the admitted call reached the backend");
    let given = [PURPOSE.to_string(), USER.to_string(), CASE.to_string()];
    assert_eq!(seen[0].0, given.clone().map(Some));
    assert_eq!(seen[0].1, given);

    // The hub's records: filterable by purpose, case and the user as given.
    let mut audit = AuditClient::new(c.hub_channel(Role::Admin, "admin"));
    let mut list = async |req: ListRecordsRequest| {
        audit
            .list_records(req)
            .await
            .expect("records")
            .into_inner()
            .records
            .into_iter()
            .filter_map(|r| r.record)
            .collect::<Vec<_>>()
    };
    let by_purpose = list(ListRecordsRequest {
        purpose: PURPOSE.into(),
        ..ListRecordsRequest::default()
    })
    .await;
    assert_eq!(by_purpose.len(), 1, "{by_purpose:?}");
    let r = &by_purpose[0];
    assert_eq!(
        (r.transaction_id.as_str(), r.case.as_str()),
        (tx.as_str(), CASE)
    );
    assert!(r.end_user_hashed && r.end_user.len() == 64 && r.end_user != USER);
    let by_case = list(ListRecordsRequest {
        case: CASE.into(),
        ..ListRecordsRequest::default()
    })
    .await;
    let outcomes: Vec<_> = by_case.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["PERMISSION_DENIED", "PERMISSION_DENIED", "OK"]);
    let by_user = list(ListRecordsRequest {
        end_user: USER.into(),
        kind: "call".into(),
        ..ListRecordsRequest::default()
    })
    .await;
    assert_eq!(by_user.len(), 3, "{by_user:?}");
    let nobody = list(ListRecordsRequest {
        end_user: "Nguyễn Văn Khác".into(),
        ..ListRecordsRequest::default()
    })
    .await;
    assert!(nobody.is_empty());
    // Nothing in the name of the refused hostile values.
    assert!(list(ListRecordsRequest::default()).await.iter().all(|r| {
        r.purpose.chars().count() <= 200 && !r.end_user.contains('\n') && r.case.len() <= 100
    }));

    c.deployment.stop().await.expect("stop");
    // Both nodes recorded the values as given.
    for node in [PROVINCE_NODE, MINISTRY_NODE] {
        let store = truc_store::Store::open(&c.dir.path().join("nodes").join(node)).expect("store");
        let record = truc_audit::read_records(&store, 0)
            .map(|r| r.expect("record").0)
            .find(|r| r.transaction_id == tx)
            .unwrap_or_else(|| panic!("{node} recorded {tx}"));
        assert_eq!(
            [record.purpose, record.end_user, record.case],
            [PURPOSE, USER, CASE],
            "{node}"
        );
        assert!(!record.end_user_hashed);
    }
    // The hub's store never holds the user as given; it does hold the case
    // (so the scan finds what is there).
    let hub_data = c.dir.path().join("hub");
    let files = files_under(&hub_data);
    assert!(contains(&files, CASE), "the scan reads the hub's store");
    assert!(!contains(&files, USER) && !contains(&files, "079123456789"));
}
