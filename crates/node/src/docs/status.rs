//! Statuses at the sender: a recipient's status arriving through the hub
//! (DeliverStatus), checked against the state machine and the bounded
//! history before it is recorded.

use tonic::Status;
use truc_doc::{ChangeKind, DocState, StatusCode};
use truc_proto::v1::{
    BusinessKind, RecipientTracking, StatusAck, StatusEvent, StatusUpdate, Tracking,
};
use truc_store::WriteBatch;

use super::{
    Documents, MAX_EVENT_BYTES, business_kind, history_full, keys, keys::storage, position,
};

impl Documents {
    /// Node.DeliverStatus: a recipient's status arriving at the sender's
    /// node. It must come from a recipient of the document, make a transition
    /// the state machine allows (FAILED_PRECONDITION otherwise, changing
    /// nothing) and fit in the bounded history (RESOURCE_EXHAUSTED); the same
    /// event again is acknowledged and recorded once.
    pub(crate) async fn deliver_status(
        &self,
        mut update: StatusUpdate,
    ) -> Result<StatusAck, Status> {
        // Checked again here: the hub is not trusted to have done it.
        truc_doc::check_status_update(&update)?;
        keys::check_part("sender", &update.sender)?;
        keys::check_part("document_id", &update.document_id)?;
        keys::check_part("recipient", &update.recipient)?;
        let ev = update
            .event
            .take()
            .ok_or_else(|| Status::invalid_argument("event is required"))?;
        let code =
            StatusCode::parse(&ev.code).map_err(|v| Status::invalid_argument(v.to_string()))?;
        if prost::Message::encoded_len(&ev) > MAX_EVENT_BYTES {
            return Err(Status::invalid_argument(format!(
                "event: more than {MAX_EVENT_BYTES} bytes"
            )));
        }
        // A recipient sets its statuses; a 13 records the sender's own request.
        let by_ok = ev.by == update.recipient
            || (code == StatusCode::ChangeRequested && ev.by == update.sender);
        if !by_ok {
            return Err(Status::invalid_argument(format!(
                "event.by: {} did not set a status of recipient {}",
                ev.by, update.recipient
            )));
        }
        let (sender, doc, recipient) = (&update.sender, &update.document_id, &update.recipient);
        let guard = self.write_lock.lock().await;
        let tracking = keys::load::<Tracking>(&self.store, &keys::outbox(sender, doc, 0))?
            .ok_or_else(|| Status::not_found(format!("no document {doc} sent by {sender} here")))?;
        let is_recipient = tracking
            .envelope
            .as_ref()
            .is_some_and(|e| e.to.iter().any(|o| &o.organ_id == recipient));
        let r_key = keys::recipient(sender, doc, 0, recipient);
        let record = keys::load::<RecipientTracking>(&self.store, &r_key)?;
        let mut record = match record {
            Some(r) if is_recipient => r,
            _ => {
                return Err(Status::permission_denied(format!(
                    "{recipient} is not a recipient of document {doc}"
                )));
            }
        };
        let history: Vec<StatusEvent> =
            keys::load_all(&self.store, &keys::history_of(sender, doc, recipient))?;
        let seen = history
            .iter()
            .any(|h| h.code == ev.code && h.unix_ms == ev.unix_ms && h.by == ev.by);
        if seen {
            drop(guard);
            self.durable().await?;
            return Ok(StatusAck { receipt: None });
        }
        let mut batch = WriteBatch::default();
        let mut events = history.len();
        let max = self.service.max_history;
        // A status proves the document arrived, even before the delivery's
        // own answer is recorded.
        let state = if record.status.is_empty() {
            if code != StatusCode::Arrived {
                if events + 2 > max {
                    return Err(history_full(max));
                }
                let arrived = StatusEvent {
                    code: StatusCode::Arrived.code().into(),
                    description: "arrived".into(),
                    unix_ms: ev.unix_ms,
                    by: recipient.clone(),
                    staff: None,
                };
                batch.insert(
                    keys::history(sender, doc, recipient, position(events)?),
                    prost::Message::encode_to_vec(&arrived),
                );
                events += 1;
            }
            None
        } else {
            Some(DocState {
                status: StatusCode::parse(&record.status).map_err(storage)?,
                change: ChangeKind::of(
                    BusinessKind::try_from(record.change).unwrap_or(BusinessKind::New),
                ),
            })
        };
        if events >= max {
            return Err(history_full(max));
        }
        let next = match (state, code) {
            (None, StatusCode::Arrived) => DocState::arrived(),
            (None, _) => self.transition(DocState::arrived(), code, &update)?,
            (Some(state), _) => self.transition(state, code, &update)?,
        };
        record.status = next.status.code().into();
        record.change = next.change.map_or(BusinessKind::New, business_kind).into();
        batch.insert(
            keys::history(sender, doc, recipient, position(events)?),
            prost::Message::encode_to_vec(&ev),
        );
        batch.insert(&r_key, prost::Message::encode_to_vec(&record));
        self.commit(guard, batch).await?;
        self.tracking_changed(sender, doc);
        Ok(StatusAck { receipt: None })
    }

    /// The state after `code` arrives at the sender for `update`'s recipient.
    fn transition(
        &self,
        state: DocState,
        code: StatusCode,
        update: &StatusUpdate,
    ) -> Result<DocState, Status> {
        let refused = |e: truc_doc::TransitionError| Status::failed_precondition(e.to_string());
        match code {
            StatusCode::Arrived => Err(Status::failed_precondition(format!(
                "status {} cannot go to 01: the document arrived already",
                state.status.code()
            ))),
            StatusCode::ChangeRequested => {
                // The change must be one this sender asked for.
                let kind = BusinessKind::try_from(update.change).unwrap_or(BusinessKind::New);
                let change = ChangeKind::of(kind).ok_or_else(|| {
                    Status::invalid_argument("change: a 13 names the recall, update or replace")
                })?;
                let sent = keys::outbox(&update.sender, &update.document_id, kind as i32);
                if self.store.get(&sent).map_err(storage)?.is_none() {
                    return Err(Status::failed_precondition(format!(
                        "{} sent no {} of document {}",
                        update.sender,
                        change.name(),
                        update.document_id
                    )));
                }
                state.request_change(change).map_err(refused)
            }
            _ => state.set_by_recipient(code).map_err(refused),
        }
    }
}

#[cfg(test)]
mod tests {

    use tonic::Code;

    use super::*;
    use crate::{config::DocumentService, docs::testing::*};

    #[tokio::test]
    async fn a_status_is_acknowledged_only_once_durable_and_so_is_its_repeat() {
        let (_dir, docs, failing) = docs_failing_flush().await;
        sent(&docs, 0);
        // The status is written but not durable: its repeat, which finds
        // it, is not acknowledged either while flushes fail.
        refused_until_durable(&failing, || docs.deliver_status(status("03", 2))).await;
        assert_eq!(codes(&docs), ("03".into(), vec!["01".into(), "03".into()]));
    }

    #[tokio::test]
    async fn statuses_at_the_sender_follow_the_state_machine_once_each() {
        let (_dir, docs) = docs_with(DocumentService::default()).await;
        sent(&docs, 0);
        // 01 → 05 is not a transition.
        let e = docs
            .deliver_status(status("05", 1))
            .await
            .expect_err("01 → 05");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        // A status before the delivery's answer implies the arrival.
        docs.deliver_status(status("03", 2)).await.expect("03");
        docs.deliver_status(status("03", 2))
            .await
            .expect("the same event again is acknowledged");
        assert_eq!(codes(&docs), ("03".into(), vec!["01".into(), "03".into()]));
        let e = docs
            .deliver_status(status("02", 3))
            .await
            .expect_err("03 → 02");
        assert_eq!(e.code(), Code::FailedPrecondition);
        let e = docs
            .deliver_status(status("99", 3))
            .await
            .expect_err("unknown");
        assert_eq!(e.code(), Code::InvalidArgument);
        // A 13 needs the change the sender really sent.
        let mut recall = status("13", 4);
        if let Some(ev) = recall.event.as_mut() {
            ev.by = S.into();
        }
        recall.change = BusinessKind::Recall as i32;
        let e = docs
            .deliver_status(recall.clone())
            .await
            .expect_err("no recall sent");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        sent(&docs, BusinessKind::Recall as i32);
        docs.deliver_status(recall).await.expect("13");
        docs.deliver_status(status("15", 5)).await.expect("15");
        let e = docs
            .deliver_status(status("04", 6))
            .await
            .expect_err("withdrawn");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(
            codes(&docs),
            (
                "15".into(),
                vec!["01".into(), "03".into(), "13".into(), "15".into()]
            )
        );
    }

    #[tokio::test]
    async fn statuses_come_only_from_a_recipient_of_the_document() {
        let (_dir, docs) = docs_with(DocumentService::default()).await;
        sent(&docs, 0);
        let mut other = status("03", 1);
        other.recipient = "000.01.37.H37".into();
        if let Some(ev) = other.event.as_mut() {
            ev.by = other.recipient.clone();
        }
        let e = docs
            .deliver_status(other)
            .await
            .expect_err("not a recipient");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let mut forged = status("03", 1);
        if let Some(ev) = forged.event.as_mut() {
            ev.by = "000.00.00.H41".into();
        }
        let e = docs
            .deliver_status(forged)
            .await
            .expect_err("set by another");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let mut unknown = status("03", 1);
        unknown.document_id = "000.00.00.H37,2026/11/28,2/UBND-VP".into();
        let e = docs
            .deliver_status(unknown)
            .await
            .expect_err("no such document");
        assert_eq!(e.code(), Code::NotFound);
        let mut nul = status("03", 1);
        nul.document_id = "a\0b".into();
        let e = docs.deliver_status(nul).await.expect_err("NUL");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(codes(&docs), (String::new(), vec![]));
    }

    #[tokio::test]
    async fn the_history_at_the_sender_is_bounded() {
        let (_dir, docs) = docs_with(DocumentService {
            max_history: 3,
            ..DocumentService::default()
        })
        .await;
        sent(&docs, 0);
        docs.deliver_status(status("03", 1)).await.expect("01, 03");
        docs.deliver_status(status("04", 2)).await.expect("04");
        let e = docs
            .deliver_status(status("05", 3))
            .await
            .expect_err("full");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_eq!(codes(&docs).1.len(), 3);
    }
}
