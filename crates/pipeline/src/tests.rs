use std::time::Duration;

use truc_audit::{AuditLog, Options, sth::Signer};
use truc_pki::{Identity, Role};
use truc_store::Store;

use super::*;

/// A step whose next hop answers `answer`, or never (None).
struct Echo {
    answer: Option<Result<u64, Status>>,
    cap: Duration,
}

struct Req {
    id: String,
    client: String,
}

impl Step for Echo {
    type Request = Req;
    type Admitted = ();
    type Response = (u64, Option<Receipt>);
    const KIND: Kind = Kind::Call;

    fn cap(&self) -> Duration {
        self.cap
    }

    fn authenticate(&self, caller: &Identity) -> Result<(), TxError> {
        match caller.role {
            Role::Node => Ok(()),
            _ => Err(TxError::Denied(format!("{caller} may not"))),
        }
    }

    async fn admit(
        &self,
        caller: &Identity,
        request: Req,
        tx: &mut Transaction,
    ) -> Result<(), TxError> {
        let client = fields::agency("client_agency", &request.client)?;
        // Only "good" hosts the client agency.
        if caller.name != "good" {
            return Err(TxError::Denied(format!("{caller} does not host {client}")));
        }
        tx.client_agency = client.to_string();
        tx.transaction_id = fields::transaction_id("transaction_id", &request.id)?;
        Ok(())
    }

    async fn forward(
        &self,
        (): (),
        _deadline: &Deadline,
        _tx: &mut Transaction,
    ) -> Result<Self::Response, TxError> {
        match &self.answer {
            None => std::future::pending().await,
            Some(Ok(n)) => Ok((*n, None)),
            Some(Err(s)) => Err(TxError::from_peer(s.clone(), "the peer")),
        }
    }

    fn respond(response: Self::Response, receipt: Option<Receipt>) -> Self::Response {
        (response.0, receipt)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    pipeline: Pipeline,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    Fixture {
        pipeline: hub_pipeline(dir.path()),
        _dir: dir,
    }
}

/// A hub's pipeline on the log in `dir`, once the log's filter of ids
/// answers (so that the tests see the path a running hub takes).
fn hub_pipeline(dir: &std::path::Path) -> Pipeline {
    let store = Store::open(dir).expect("store");
    let signer = Signer::generate().expect("key");
    let audit = AuditLog::open(store, "hub", Options::default(), Some(signer)).expect("log");
    assert!(
        audit.reader().wait_for_id_filter(),
        "the filter of ids answers"
    );
    Pipeline::new(audit, Arc::new(Metrics::new())).with_unique_ids()
}

fn node(name: &str) -> Identity {
    Identity::new(Role::Node, name).expect("identity")
}

fn req(id: u64, client: &str) -> Req {
    Req {
        id: format!("{id:032x}"),
        client: client.into(),
    }
}

fn ok_step() -> Echo {
    Echo {
        answer: Some(Ok(7)),
        cap: Duration::from_secs(5),
    }
}

fn last_record(p: &Pipeline) -> truc_audit::AuditRecord {
    let reader = p.audit().reader();
    reader
        .record(reader.size() - 1)
        .expect("read")
        .expect("a record")
        .1
}

#[tokio::test]
async fn an_answer_is_recorded_with_the_caller_and_gets_a_receipt() {
    let f = fixture();
    let (n, receipt) = f
        .pipeline
        .run(
            &ok_step(),
            request_from(node("good"), req(1, "000.00.00.H37")),
        )
        .await
        .expect("ok");
    assert_eq!(n, 7);
    let receipt = receipt.expect("the hub's log signs heads");
    assert_eq!(receipt.transaction_id, format!("{:032x}", 1));
    let r = last_record(&f.pipeline);
    assert_eq!(r.caller, "node/good");
    assert_eq!(r.outcome, "OK");
    assert_eq!(r.client_agency, "000.00.00.H37");
}

#[tokio::test]
async fn a_refusal_is_recorded_but_not_attributed_to_the_claimed_agency() {
    let f = fixture();
    let err = f
        .pipeline
        .run(
            &ok_step(),
            request_from(node("evil"), req(2, "000.00.00.H37")),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    let r = last_record(&f.pipeline);
    assert_eq!(r.caller, "node/evil");
    assert_eq!(r.outcome, "PERMISSION_DENIED");
    assert_eq!(
        r.client_agency, "",
        "the claim of a node that does not host it"
    );
    assert_eq!(r.transaction_id, "");
}

#[tokio::test]
async fn invalid_fields_are_refused_before_they_reach_the_record() {
    let f = fixture();
    let huge = format!("000.00.00.H37{}", "\0".repeat(80_000));
    let err = f
        .pipeline
        .run(&ok_step(), request_from(node("good"), req(3, &huge)))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    let r = last_record(&f.pipeline);
    assert_eq!(r.outcome, "INVALID_ARGUMENT");
    assert!(r.client_agency.is_empty() && r.service.is_empty());
}

#[tokio::test]
async fn a_transaction_id_is_made_once() {
    let f = fixture();
    let step = ok_step();
    f.pipeline
        .run(&step, request_from(node("good"), req(4, "000.00.00.H37")))
        .await
        .expect("first");
    let genuine = f.pipeline.audit().reader().index_of(&format!("{:032x}", 4));
    let err = f
        .pipeline
        .run(&step, request_from(node("good"), req(4, "000.00.00.H41")))
        .await
        .expect_err("repeat");
    assert_eq!(err.code(), Code::AlreadyExists);
    let r = last_record(&f.pipeline);
    assert_eq!(r.outcome, "ALREADY_EXISTS");
    assert_eq!(r.transaction_id, "", "the repeat does not carry the id");
    assert_eq!(
        f.pipeline
            .audit()
            .reader()
            .index_of(&format!("{:032x}", 4))
            .expect("read"),
        genuine.expect("read"),
        "the index still names the genuine record"
    );
}

#[tokio::test]
async fn an_id_recorded_before_a_restart_is_refused_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let step = ok_step();
    let before = hub_pipeline(dir.path());
    before
        .run(&step, request_from(node("good"), req(6, "000.00.00.H37")))
        .await
        .expect("first");
    before.audit().close().await;
    drop(before);
    let after = hub_pipeline(dir.path());
    let err = after
        .run(&step, request_from(node("good"), req(6, "000.00.00.H37")))
        .await
        .expect_err("repeat after the restart");
    assert_eq!(err.code(), Code::AlreadyExists);
    after
        .run(&step, request_from(node("good"), req(7, "000.00.00.H37")))
        .await
        .expect("a new id");
}

#[tokio::test]
async fn concurrent_transactions_with_one_id_make_one() {
    let f = fixture();
    let never = Echo {
        answer: None,
        cap: Duration::from_millis(300),
    };
    let step = ok_step();
    // The first holds the id while its next hop does not answer.
    let (slow, fast) = tokio::join!(
        f.pipeline
            .run(&never, request_from(node("good"), req(5, "000.00.00.H37"))),
        async {
            tokio::task::yield_now().await;
            f.pipeline
                .run(&step, request_from(node("good"), req(5, "000.00.00.H37")))
                .await
        }
    );
    assert_eq!(slow.expect_err("deadline").code(), Code::DeadlineExceeded);
    assert_eq!(fast.expect_err("in flight").code(), Code::AlreadyExists);
}

#[tokio::test]
async fn a_peer_that_never_answers_holds_nothing_beyond_the_deadline() {
    let f = fixture();
    let never = Echo {
        answer: None,
        cap: Duration::from_millis(100),
    };
    let err = f
        .pipeline
        .run(&never, request_from(node("good"), req(6, "000.00.00.H37")))
        .await
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(last_record(&f.pipeline).outcome, "DEADLINE_EXCEEDED");
    // The id is free again for proofs: recorded once.
    assert!(
        f.pipeline
            .audit()
            .reader()
            .index_of(&format!("{:032x}", 6))
            .expect("read")
            .is_some()
    );
}

#[tokio::test]
async fn the_callers_deadline_shortens_the_cap() {
    let never = Echo {
        answer: None,
        cap: Duration::from_secs(3600),
    };
    let f = fixture();
    let mut request = request_from(node("good"), req(8, "000.00.00.H37"));
    request.set_timeout(Duration::from_millis(100));
    let err = f.pipeline.run(&never, request).await.expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded);
}

#[tokio::test]
async fn a_wrong_role_is_refused_and_recorded() {
    let f = fixture();
    let admin = Identity::new(Role::Admin, "ops").expect("identity");
    let err = f
        .pipeline
        .run(&ok_step(), request_from(admin, req(9, "000.00.00.H37")))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(last_record(&f.pipeline).caller, "admin/ops");
}

#[tokio::test]
async fn a_peer_error_keeps_its_code_and_is_tagged_with_the_id() {
    let f = fixture();
    let mut sent = Status::not_found("no such citizen");
    sent.metadata_mut()
        .insert("content-type", "application/grpc".parse().expect("ascii"));
    let step = Echo {
        answer: Some(Err(sent)),
        cap: Duration::from_secs(5),
    };
    let err = f
        .pipeline
        .run(&step, request_from(node("good"), req(10, "000.00.00.H37")))
        .await
        .expect_err("peer error");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.metadata()
            .get(truc_ops::TRANSACTION_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(format!("{:032x}", 10).as_str())
    );
}

#[test]
fn deadlines_shrink_along_the_path() {
    let started = std::time::Instant::now();
    let cap = Duration::from_secs(30);
    let d = Deadline::new(Some(Duration::from_secs(1)), started, cap);
    let left = d.remaining();
    assert!(
        left <= Duration::from_millis(900),
        "a margin is kept: {left:?}"
    );
    assert!(left > Duration::from_millis(500), "{left:?}");
    // What goes to the next hop is what is left, never more.
    let request = d.request(());
    let next = truc_ops::incoming_timeout(request.metadata()).expect("grpc-timeout");
    assert!(next <= left, "{next:?} > {left:?}");
    // Both per-call values go out never indexed in HPACK.
    for key in ["grpc-timeout", "traceparent"] {
        let value = request.metadata().get(key).expect(key);
        assert!(value.is_sensitive(), "{key} would be indexed");
    }
    // The cap bounds a generous caller; no deadline at all means the cap.
    assert!(Deadline::new(Some(Duration::from_secs(3600)), started, cap).remaining() <= cap);
    assert!(Deadline::new(None, started, cap).remaining() <= cap);
    assert!(Deadline::new(None, started, cap).remaining() > Duration::from_secs(29));
}
