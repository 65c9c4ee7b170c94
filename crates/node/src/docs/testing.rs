//! What the tests of the documents share: a sender, a recipient, a
//! document, documents over a temporary store, and a sent document.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use truc_proto::v1::{Envelope, Organ, RecipientTracking, StatusEvent, StatusUpdate, Tracking};
use truc_registry::AgencyCode;
use truc_store::{Store, WriteBatch};

use super::{Delivery, Documents, keys, recipients_of};
use crate::config::DocumentService;

pub(super) const S: &str = "000.00.00.H37";
pub(super) const R: &str = "000.00.00.G22";
pub(super) const DOC: &str = "000.00.00.H37,2026/11/28,1/UBND-VP";

pub(super) async fn docs_with(service: DocumentService) -> (tempfile::TempDir, Arc<Documents>) {
    let dir = tempfile::tempdir().expect("dir");
    let docs = open_in(dir.path(), service);
    (dir, docs)
}

/// Documents over the store in `dir`, with a hub that is never reached.
pub(super) fn open_in(dir: &std::path::Path, service: DocumentService) -> Arc<Documents> {
    open_flushing(dir, service, None)
}

/// Documents whose flushes fail while `failing` is set.
pub(super) async fn docs_failing_flush() -> (tempfile::TempDir, Arc<Documents>, Arc<AtomicBool>) {
    let (dir, docs, failing, _) = docs_counting_flush().await;
    (dir, docs, failing)
}

/// The same, with the count of flushes tried.
pub(super) async fn docs_counting_flush() -> (
    tempfile::TempDir,
    Arc<Documents>,
    Arc<AtomicBool>,
    Arc<AtomicU64>,
) {
    let dir = tempfile::tempdir().expect("dir");
    let failing = Arc::new(AtomicBool::new(false));
    let tried = Arc::new(AtomicU64::new(0));
    let docs = open_flushing(
        dir.path(),
        DocumentService::default(),
        Some((failing.clone(), tried.clone())),
    );
    (dir, docs, failing, tried)
}

/// Runs `attempt` while flushes fail, twice (the first and its repeat,
/// which finds what is written but not durable: both refused INTERNAL),
/// then once flushes work again; what that last one gives.
pub(super) async fn refused_until_durable<T, F>(
    failing: &AtomicBool,
    mut attempt: impl FnMut() -> F,
) -> T
where
    T: std::fmt::Debug,
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    failing.store(true, Ordering::SeqCst);
    for what in ["its flush failed", "the repeat finds what is not durable"] {
        let e = attempt().await.expect_err(what);
        assert_eq!(e.code(), tonic::Code::Internal, "{what}: {e:?}");
    }
    failing.store(false, Ordering::SeqCst);
    attempt().await.expect("durable now")
}

fn open_flushing(
    dir: &std::path::Path,
    service: DocumentService,
    failing: Option<(Arc<AtomicBool>, Arc<AtomicU64>)>,
) -> Arc<Documents> {
    let store = Store::open(&dir.join("db")).expect("store");
    let hub = crate::hubs::Hubs::of(vec![(
        "127.0.0.1:9".into(),
        tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy(),
    )]);
    let flush: truc_store::FlushFn = {
        let store = store.clone();
        Box::new(move || {
            if let Some((failing, tried)) = &failing {
                tried.fetch_add(1, Ordering::SeqCst);
                if failing.load(Ordering::SeqCst) {
                    return Err(truc_store::StoreError::Flush("the disk is gone".into()));
                }
            }
            store.flush()
        })
    };
    let mut docs = Documents::open(
        store,
        dir,
        hub,
        truc_doc::Limits::default(),
        service,
        (Duration::from_millis(10), Duration::from_millis(100)),
    )
    .expect("open");
    // Nothing else holds the documents yet: their flush can be swapped.
    Arc::get_mut(&mut docs).expect("not shared yet").flusher =
        truc_store::GroupFlush::start("test-docs-flush", flush).expect("flusher");
    docs
}

/// The outbox as a send of `kind` to R leaves it.
pub(super) fn sent(docs: &Documents, kind: i32) {
    let envelope = Envelope {
        to: vec![Organ {
            organ_id: R.into(),
            ..Organ::default()
        }],
        document_id: DOC.into(),
        business_kind: kind,
        ..Envelope::default()
    };
    let tracking = Tracking {
        sender: S.into(),
        document_id: DOC.into(),
        envelope: Some(envelope),
        ..Tracking::default()
    };
    let mut record = RecipientTracking {
        recipient: R.into(),
        ..RecipientTracking::default()
    };
    Delivery::Pending.set(&mut record);
    let mut b = WriteBatch::default();
    b.insert(
        keys::outbox(S, DOC, kind),
        prost::Message::encode_to_vec(&tracking),
    );
    b.insert(
        keys::recipient(S, DOC, kind, R),
        prost::Message::encode_to_vec(&record),
    );
    docs.store.apply(b).expect("apply");
}

pub(super) fn status(code: &str, unix_ms: u64) -> StatusUpdate {
    StatusUpdate {
        transaction_id: "ab".repeat(16),
        sender: S.into(),
        document_id: DOC.into(),
        recipient: R.into(),
        event: Some(StatusEvent {
            code: code.into(),
            description: String::new(),
            unix_ms,
            by: R.into(),
            staff: None,
        }),
        change: 0,
    }
}

pub(super) fn codes(docs: &Documents) -> (String, Vec<String>) {
    let sender = AgencyCode::parse(S).expect("code");
    let t = docs.tracking(&sender, DOC).expect("tracking");
    let r = &t.recipients[0];
    (
        r.status.clone(),
        r.history.iter().map(|h| h.code.clone()).collect(),
    )
}

impl Documents {
    /// Records `envelope` as sent by `sender`, not yet delivered, as a
    /// send leaves the outbox (for tests that need a sent document).
    pub(crate) fn record_sent(&self, sender: &str, envelope: Envelope) {
        let kind = envelope.business_kind;
        let mut batch = WriteBatch::default();
        for r in recipients_of(&envelope) {
            let mut record = RecipientTracking {
                recipient: r.clone(),
                ..RecipientTracking::default()
            };
            Delivery::Pending.set(&mut record);
            batch.insert(
                keys::recipient(sender, &envelope.document_id, kind, &r),
                prost::Message::encode_to_vec(&record),
            );
        }
        let tracking = Tracking {
            sender: sender.into(),
            document_id: envelope.document_id.clone(),
            envelope: Some(envelope.clone()),
            ..Tracking::default()
        };
        batch.insert(
            keys::outbox(sender, &envelope.document_id, kind),
            prost::Message::encode_to_vec(&tracking),
        );
        self.store.apply(batch).expect("apply");
    }
}
