#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! The verifiable audit log through the hub's Audit service: receipts, tree
//! heads, inclusion and consistency proofs, records and who may see them.

use tonic::Code;
use truc_audit::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use truc_audit::sth::verify_tree_head;
use truc_pki::Role;
use truc_proto::v1::{
    GetConsistencyProofRequest, GetInclusionProofRequest, GetTreeHeadRequest, ListRecordsRequest,
    Receipt, audit_client::AuditClient, get_inclusion_proof_request::Leaf,
};
use truc_tests::*;

fn hash(b: &[u8]) -> Hash {
    b.try_into().expect("32 bytes")
}

fn path(p: &[bytes::Bytes]) -> Vec<Hash> {
    p.iter().map(|h| hash(h)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_prove_inclusion_and_the_log_only_grows() {
    let c = start().await;
    let d = &c.deployment;
    // The hub key, as a node has it: the file `truc pki init` wrote, pinned
    // in the node's config.
    let key = truc_audit::sth::read_public_key(&d.files.pki.audit_public_key()).expect("key");

    let mut province = d
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    let mut ministry = d
        .agency_client(MINISTRY_NODE, MINISTRY_CLIENT)
        .expect("client");
    let mut receipts: Vec<Receipt> = Vec::new();
    for i in 0..6 {
        let r = if i % 2 == 0 {
            province
                .call(call(H37, CITIZEN_LOOKUP, r#"{"id":"001089012345"}"#))
                .await
        } else {
            ministry
                .call(call(G22, HOUSEHOLD_REGISTRY, r#"{"id":"001089012345"}"#))
                .await
        };
        receipts.push(r.expect("call").into_inner().receipt.expect("receipt"));
    }
    // A refused call is audited too, but only the province is a party.
    province
        .call(call(H37_DEPT, HOUSEHOLD_REGISTRY, "{}"))
        .await
        .expect_err("no grant");

    let mut as_province = AuditClient::new(c.hub_channel(Role::Node, PROVINCE_NODE));
    for receipt in &receipts {
        let head = receipt.tree_head.clone().expect("head");
        verify_tree_head(&head, &key).expect("hub signature");
        let proof = as_province
            .get_inclusion_proof(GetInclusionProofRequest {
                leaf: Some(Leaf::TransactionId(receipt.transaction_id.clone())),
                tree_size: head.tree_size,
            })
            .await
            .expect("inclusion proof")
            .into_inner();
        assert_eq!(proof.leaf_index, receipt.record_index);
        assert!(verify_inclusion(
            &hash(&receipt.leaf_hash),
            receipt.record_index,
            head.tree_size,
            &path(&proof.path),
            &hash(&head.root_hash),
        ));
        // A receipt's leaf hash is the hash of the record the hub serves.
        let records = as_province
            .list_records(ListRecordsRequest {
                transaction_id: receipt.transaction_id.clone(),
                ..ListRecordsRequest::default()
            })
            .await
            .expect("records")
            .into_inner()
            .records;
        assert_eq!(records.len(), 1);
        assert_eq!(
            leaf_hash(&records[0].record_bytes),
            hash(&receipt.leaf_hash)
        );
    }

    // Every head handed out is a prefix of the latest one.
    let latest = as_province
        .get_tree_head(GetTreeHeadRequest { tree_size: 0 })
        .await
        .expect("latest head")
        .into_inner();
    verify_tree_head(&latest, &key).expect("signature");
    assert_eq!(latest.tree_size, 7);
    for receipt in &receipts {
        let old = receipt.tree_head.clone().expect("head");
        let proof = as_province
            .get_consistency_proof(GetConsistencyProofRequest {
                from_size: old.tree_size,
                to_size: latest.tree_size,
            })
            .await
            .expect("consistency proof")
            .into_inner();
        assert!(verify_consistency(
            old.tree_size,
            latest.tree_size,
            &hash(&old.root_hash),
            &hash(&latest.root_hash),
            &path(&proof.path),
        ));
        // The head of that size is stored and served as it was handed out
        // (with the witnesses' cosignatures the hub added since).
        let mut stored = as_province
            .get_tree_head(GetTreeHeadRequest {
                tree_size: old.tree_size,
            })
            .await
            .expect("head by size")
            .into_inner();
        stored.cosignatures.clear();
        assert_eq!(stored, old);
    }
    c.deployment.stop().await.expect("stop");

    // The nodes stored the receipts beside their own records, verified.
    let store = truc_store::Store::open(&c.dir.path().join("nodes").join(PROVINCE_NODE))
        .expect("node store");
    let report = truc_audit::verify(&store, Some(&key)).expect("verify");
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.receipts, 3);
    let verified = truc_audit::read_records(&store, 0)
        .map(|r| r.expect("record").0)
        .filter(|r| r.receipt.is_some() && r.receipt_verified)
        .count();
    assert_eq!(verified, 3);
}

#[tokio::test]
async fn records_are_paged_filtered_and_shown_to_parties_only() {
    let c = start().await;
    let mut province = c
        .deployment
        .agency_client(PROVINCE_NODE, PROVINCE_CLIENT)
        .expect("client");
    for _ in 0..3 {
        province
            .call(call(H37, CITIZEN_LOOKUP, r#"{"id":"001089012345"}"#))
            .await
            .expect("call");
    }
    let denied = province
        .call(call(H37_DEPT, HOUSEHOLD_REGISTRY, "{}"))
        .await
        .expect_err("no grant");
    let denied_tx = denied
        .metadata()
        .get("x-truc-transaction-id")
        .and_then(|v| v.to_str().ok())
        .expect("tx id")
        .to_string();

    // The admin pages through all four.
    let mut admin = AuditClient::new(c.hub_channel(Role::Admin, "admin"));
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = admin
            .list_records(ListRecordsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..ListRecordsRequest::default()
            })
            .await
            .expect("page")
            .into_inner();
        seen.extend(page.records.iter().map(|r| r.index));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec![0, 1, 2, 3]);
    let by_service = admin
        .list_records(ListRecordsRequest {
            service: HOUSEHOLD_REGISTRY.into(),
            ..ListRecordsRequest::default()
        })
        .await
        .expect("filtered")
        .into_inner()
        .records;
    assert_eq!(by_service.len(), 1);
    assert_eq!(
        by_service[0].record.as_ref().map(|r| r.outcome.as_str()),
        Some("PERMISSION_DENIED")
    );

    // By party, from the hub's party index.
    let by_agency = |agency: &str| ListRecordsRequest {
        agency: agency.into(),
        ..ListRecordsRequest::default()
    };
    let of_department = admin
        .list_records(by_agency(H37_DEPT))
        .await
        .expect("by agency")
        .into_inner()
        .records;
    assert_eq!(of_department.len(), 1);
    assert_eq!(of_department[0].index, 3);
    let of_province = admin
        .list_records(by_agency(H37))
        .await
        .expect("by agency")
        .into_inner()
        .records;
    assert_eq!(of_province.len(), 4, "client of three, provider of one");

    // The ministry is no party to the department's refused call.
    let mut ministry = AuditClient::new(c.hub_channel(Role::Node, MINISTRY_NODE));
    let visible = ministry
        .list_records(ListRecordsRequest::default())
        .await
        .expect("records")
        .into_inner()
        .records;
    assert_eq!(visible.len(), 3);
    let e = ministry
        .get_inclusion_proof(GetInclusionProofRequest {
            leaf: Some(Leaf::TransactionId(denied_tx)),
            tree_size: 0,
        })
        .await
        .expect_err("not a party");
    assert_eq!(e.code(), Code::NotFound);

    // Agency systems ask their node, not the hub.
    let mut client = AuditClient::new(c.hub_channel(Role::Client, PROVINCE_CLIENT));
    let e = client
        .get_tree_head(GetTreeHeadRequest { tree_size: 0 })
        .await
        .expect_err("client certificate");
    assert_eq!(e.code(), Code::PermissionDenied);

    // Questions beyond the log.
    let e = admin
        .get_inclusion_proof(GetInclusionProofRequest {
            leaf: Some(Leaf::LeafIndex(100)),
            tree_size: 0,
        })
        .await
        .expect_err("no leaf 100");
    assert_eq!(e.code(), Code::OutOfRange);
    let e = admin
        .get_consistency_proof(GetConsistencyProofRequest {
            from_size: 3,
            to_size: 50,
        })
        .await
        .expect_err("no size 50");
    assert_eq!(e.code(), Code::OutOfRange);
    let e = admin
        .get_inclusion_proof(GetInclusionProofRequest {
            leaf: None,
            tree_size: 0,
        })
        .await
        .expect_err("no leaf named");
    assert_eq!(e.code(), Code::InvalidArgument);
}
