#![allow(unused_crate_dependencies)] // Each test or example file is a crate of its own; none uses every dependency.
//! The hub killed with SIGKILL under concurrent load loses nothing it
//! acknowledged: after a restart every receipt's record is in the log, the
//! tree verifies, and every head handed out before the crash is a prefix of
//! the log after it.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::*;
use truc_audit::{
    LogReader,
    merkle::{Hash, verify_consistency},
    sth::{read_public_key, verify_tree_head},
};
use truc_proto::v1::{CallRequest, Receipt, agency_client::AgencyClient};

#[test]
fn hub_killed_under_load_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().expect("dir");
    let data = demo_files(dir.path(), "1");
    let client_config = data.join("client-langson-dms.toml");
    let mut deployment = Deployment::spawn(&data);
    let up = call_until_up(
        &client_config,
        "000.00.00.H37",
        "000.00.00.G22/citizen-lookup/v1",
    );
    assert!(up.status.success(), "{}", text(&up.stderr));

    let acked: Arc<Mutex<Vec<Receipt>>> = Arc::default();
    // (Calls acknowledged, calls failed) so far; the test waits on it.
    let (progress, mut seen) = tokio::sync::watch::channel((0usize, 0u64));
    let progress = Arc::new(progress);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config = truc_ops::config::ClientConfig::load(&client_config).expect("config");
        let client = AgencyClient::new(config.channel().expect("channel"));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (mut client, acked, progress, stop) = (
                client.clone(),
                acked.clone(),
                progress.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut req = tonic::Request::new(CallRequest {
                        client_agency: "000.00.00.H37".into(),
                        service: "000.00.00.G22/citizen-lookup/v1".into(),
                        content_type: "application/json".into(),
                        payload: Bytes::from_static(br#"{"id":"001089012345"}"#),
                        ..CallRequest::default()
                    });
                    req.set_timeout(Duration::from_secs(5));
                    match client.call(req).await {
                        Ok(r) => {
                            let receipt = r.into_inner().receipt.expect("receipt on success");
                            acked.lock().expect("lock").push(receipt);
                            progress.send_modify(|p| p.0 += 1);
                        }
                        Err(_) => {
                            progress.send_modify(|p| p.1 += 1);
                            // Pacing, not waiting: no busy loop while the hub is down.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }));
        }
        // Let load build up, then kill the hub in the middle of it.
        tokio::time::timeout(Duration::from_secs(60), seen.wait_for(|p| p.0 >= 200))
            .await
            .expect("200 calls acknowledged in time")
            .expect("load running");
        let status = deployment.hub.signal_and_wait("KILL");
        assert!(!status.success());
        // Calls fail while the hub is down.
        let failed_before = seen.borrow().1;
        tokio::time::timeout(
            Duration::from_secs(30),
            seen.wait_for(|p| p.1 > failed_before),
        )
        .await
        .expect("calls failed while the hub was down")
        .expect("load running");
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("load task");
        }
    });
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 200);

    // Restart: the hub opens its data and serves again.
    deployment.hub = spawn(&[
        "hub",
        "--config",
        data.join("hub.toml").to_str().expect("utf-8"),
    ]);
    let again = call_until_up(
        &client_config,
        "000.00.00.H37",
        "000.00.00.G22/citizen-lookup/v1",
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(deployment.hub.signal_and_wait("TERM").success());

    // The whole log verifies offline: records without gaps, tree, heads, counters.
    verify_hub_log(&data);
    let hub_dir = data.join("hub");

    let key = read_public_key(&data.join("pki/audit-signing.pub")).expect("key");
    let store = truc_store::Store::open(&hub_dir).expect("store");
    let log = LogReader::offline(store).expect("reader");
    let size = log.size();
    let root = log.root(size).expect("root");
    for receipt in &acked {
        // The acknowledged record is there, unchanged.
        let (leaf, _) = log
            .inclusion_proof(receipt.record_index, size)
            .expect("acknowledged record present");
        assert_eq!(&leaf[..], receipt.leaf_hash.as_ref());
        // The head handed out with it is consistent with the log now.
        let head = receipt.tree_head.as_ref().expect("head");
        verify_tree_head(head, &key).expect("signature");
        let old_root: Hash = head.root_hash.as_ref().try_into().expect("32 bytes");
        assert_eq!(log.root(head.tree_size).expect("old root"), old_root);
        let proof = log
            .consistency_proof(head.tree_size, size)
            .expect("consistency proof");
        assert!(verify_consistency(
            head.tree_size,
            size,
            &old_root,
            &root,
            &proof
        ));
    }
}
