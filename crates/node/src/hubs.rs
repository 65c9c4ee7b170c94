//! The hub replicas a node talks to: one channel per replica, calls spread
//! round robin over the healthy ones, a replica marked down when the
//! transport fails or the hub refuses with the `truc-retry: safe` marker,
//! and probed back with `grpc.health.v1`.
//!
//! An address that is a DNS name (`hub.truc.svc:7000`, a Kubernetes
//! headless Service) stands for every address it resolves to: it is
//! resolved at start and every [`RESOLVE_EVERY`], with one replica per
//! address, so calls spread over (and fail over between) every replica
//! behind the name. New addresses are added; vanished ones leave the
//! rotation at once, and their channel closes once the calls holding it
//! finish. A failed or empty lookup keeps what the name stood for before
//! (before any lookup succeeded: the name itself, resolved per connection).
//!
//! The retry rule: a call moves to another replica only when it provably
//! did not reach a hub ([`did_not_reach_a_hub`]: no connection could be
//! made, the replica's HTTP/2 layer turned the stream away unprocessed, or
//! the hub answered UNAVAILABLE with `truc-retry: safe`
//! (`truc_ops::is_retry_safe`), which it sends only for requests it refused
//! before recording anything). A call whose connection broke after
//! it was sent may be in a replica's log, so it is answered to the caller
//! as it failed, never sent twice.

use std::sync::{
    Arc, Mutex, RwLock,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};
use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};

use tonic::{Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use truc_ops::Shutdown;

/// How often replicas marked down are probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How often DNS names among the hub addresses are resolved again.
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// Looks up a `host:port`'s addresses (`tokio::net::lookup_host`; tests
/// script it).
pub(crate) type Resolve = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver.
pub(crate) fn system_resolver() -> Resolve {
    Arc::new(|host_port: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host(host_port).await?.collect()) })
    })
}

/// Makes the channel to one address (the hub's TLS name is fixed).
type Connect = Arc<dyn Fn(&str) -> Result<Channel, truc_pki::PkiError> + Send + Sync>;

/// One hub replica.
struct Replica {
    /// The configured address it comes from (a name or an `ip:port`).
    configured: String,
    address: String,
    channel: Channel,
    healthy: AtomicBool,
    /// The origin of this replica's log, once a receipt or head named it.
    origin: Mutex<Option<String>>,
}

impl Replica {
    fn new(configured: &str, address: String, channel: Channel) -> Replica {
        Replica {
            configured: configured.to_string(),
            address,
            channel,
            healthy: AtomicBool::new(true),
            origin: Mutex::new(None),
        }
    }
}

/// The hub's replicas (cheap to clone).
#[derive(Clone)]
pub(crate) struct Hubs {
    /// The current replicas; replaced whole when a name resolves anew.
    replicas: Arc<RwLock<Arc<[Arc<Replica>]>>>,
    /// The addresses of the config, in order.
    configured: Arc<[String]>,
    connect: Connect,
    next: Arc<AtomicUsize>,
}

/// A replica chosen for one call.
#[derive(Clone)]
pub(crate) struct Pick {
    /// Its position in the config's list.
    pub(crate) index: usize,
    /// Its channel.
    pub(crate) channel: Channel,
}

impl Hubs {
    /// Channels to `addresses`, whose certificates must name `hub_name`.
    pub(crate) fn new(
        addresses: &[String],
        hub_name: &str,
        tls: impl Into<truc_pki::ClientTls> + Clone + Send + Sync + 'static,
    ) -> Result<Hubs, truc_pki::PkiError> {
        let hub_name = hub_name.to_string();
        let connect: Connect = Arc::new(move |a| truc_pki::channel(a, &hub_name, tls.clone()));
        Hubs::with_connect(addresses, connect)
    }

    fn with_connect(addresses: &[String], connect: Connect) -> Result<Hubs, truc_pki::PkiError> {
        let replicas = addresses
            .iter()
            .map(|a| Ok(Arc::new(Replica::new(a, a.clone(), connect(a)?))))
            .collect::<Result<Vec<_>, truc_pki::PkiError>>()?;
        Ok(Hubs {
            replicas: Arc::new(RwLock::new(replicas.into())),
            configured: addresses.to_vec().into(),
            connect,
            next: Arc::default(),
        })
    }

    /// One replica per channel, for tests.
    #[cfg(test)]
    pub(crate) fn of(channels: Vec<(String, Channel)>) -> Hubs {
        let replicas: Vec<_> = channels
            .iter()
            .map(|(address, channel)| {
                Arc::new(Replica::new(address, address.clone(), channel.clone()))
            })
            .collect();
        let connect: Connect = Arc::new(|a| {
            Ok(Channel::from_shared(format!("http://{a}"))
                .map_err(|_| truc_pki::PkiError::InvalidName(a.to_string()))?
                .connect_lazy())
        });
        Hubs {
            replicas: Arc::new(RwLock::new(replicas.into())),
            configured: channels.into_iter().map(|(a, _)| a).collect(),
            connect,
            next: Arc::default(),
        }
    }

    /// The replicas now.
    fn list(&self) -> Arc<[Arc<Replica>]> {
        match self.replicas.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Resolves every configured address that is a DNS name with `resolve`
    /// and makes the replicas one per address found: those already there
    /// are kept as they are (health, log origin), new ones added, vanished
    /// ones dropped (calls holding their channel finish on it). A name
    /// whose lookup fails or finds nothing keeps its replicas.
    pub(crate) async fn resolve(&self, resolve: &Resolve) {
        let old = self.list();
        let mut replicas: Vec<Arc<Replica>> = Vec::new();
        for configured in self.configured.iter() {
            let kept = || old.iter().filter(|r| &r.configured == configured).cloned();
            if configured.parse::<SocketAddr>().is_ok() {
                replicas.extend(kept());
                continue;
            }
            let found = match resolve(configured.clone()).await {
                Ok(found) if !found.is_empty() => found,
                Ok(_) => {
                    tracing::warn!(address = %configured, "hub address resolves to nothing; keeping the replicas it had");
                    replicas.extend(kept());
                    continue;
                }
                Err(e) => {
                    tracing::warn!(address = %configured, error = %e, "cannot resolve the hub address; keeping the replicas it had");
                    replicas.extend(kept());
                    continue;
                }
            };
            let mut found: Vec<String> = found.iter().map(SocketAddr::to_string).collect();
            found.sort();
            found.dedup();
            for address in found {
                if let Some(r) = kept().find(|r| r.address == address) {
                    replicas.push(r);
                    continue;
                }
                match (self.connect)(&address) {
                    Ok(channel) => {
                        tracing::info!(from = %configured, replica = %address, "hub replica added");
                        replicas.push(Arc::new(Replica::new(configured, address, channel)));
                    }
                    Err(e) => {
                        tracing::warn!(replica = %address, error = %e, "no channel to the hub replica")
                    }
                }
            }
        }
        if replicas.is_empty() {
            return;
        }
        for r in old.iter() {
            if !replicas.iter().any(|n| Arc::ptr_eq(n, r)) {
                tracing::info!(replica = %r.address, "hub replica gone from DNS; dropped");
            }
        }
        if let Ok(mut current) = self.replicas.write() {
            *current = replicas.into();
        }
    }

    /// Resolves the DNS names among the addresses now, then every
    /// [`RESOLVE_EVERY`] until shutdown (nothing to do without names).
    pub(crate) async fn keep_resolving(&self, resolve: Resolve, shutdown: Shutdown) {
        if self
            .configured
            .iter()
            .all(|a| a.parse::<SocketAddr>().is_ok())
        {
            return;
        }
        self.resolve(&resolve).await;
        let hubs = self.clone();
        every(RESOLVE_EVERY, shutdown, move || {
            let (hubs, resolve) = (hubs.clone(), resolve.clone());
            async move { hubs.resolve(&resolve).await }
        });
    }

    /// How many replicas there are.
    pub(crate) fn len(&self) -> usize {
        self.list().len()
    }

    /// The replica's address.
    pub(crate) fn address(&self, index: usize) -> String {
        self.list()
            .get(index)
            .map_or(String::new(), |r| r.address.clone())
    }

    /// The channel to replica `index`.
    pub(crate) fn channel(&self, index: usize) -> Option<Channel> {
        self.list().get(index).map(|r| r.channel.clone())
    }

    /// Whether replica `index` is taken as serving.
    pub(crate) fn is_healthy(&self, index: usize) -> bool {
        self.list()
            .get(index)
            .is_some_and(|r| r.healthy.load(Ordering::Relaxed))
    }

    /// The next replica, round robin over the healthy ones (over all of
    /// them when none is healthy: a call then finds out).
    pub(crate) fn pick(&self) -> Pick {
        let n = self.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let index = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.is_healthy(i))
            .unwrap_or(start % n);
        Pick {
            index,
            channel: self.channel(index).unwrap_or_else(|| {
                // `NodeConfig` holds at least one address; keep this total.
                Channel::from_static("http://127.0.0.1:9").connect_lazy()
            }),
        }
    }

    /// The replica whose log is `origin`, if one is known to be.
    pub(crate) fn for_origin(&self, origin: &str) -> Option<Pick> {
        self.list().iter().enumerate().find_map(|(index, r)| {
            let matches = r.origin.lock().is_ok_and(|o| o.as_deref() == Some(origin));
            matches.then(|| Pick {
                index,
                channel: r.channel.clone(),
            })
        })
    }

    /// The channel to the replica keeping the log `origin`: the one known
    /// to, or the only replica there is.
    pub(crate) fn for_log(&self, origin: &str) -> Option<Channel> {
        match self.for_origin(origin) {
            Some(p) => Some(p.channel),
            None if self.len() == 1 => self.channel(0),
            None => None,
        }
    }

    /// Records that replica `index` signs the log `origin` (learnt from a
    /// head it served, which the caller has verified).
    pub(crate) fn learn_origin(&self, index: usize, origin: &str) {
        if origin.is_empty() {
            return;
        }
        let list = self.list();
        if let Some(mut o) = list.get(index).and_then(|r| r.origin.lock().ok()) {
            if o.as_deref() != Some(origin) {
                *o = Some(origin.to_string());
            }
        }
    }

    /// Takes note of how a call to replica `index` failed: a transport
    /// failure or a marked refusal takes the replica out of rotation
    /// until a probe finds it serving. The hub's own answers (even
    /// UNAVAILABLE for a provider that is down) say nothing of the
    /// replica.
    pub(crate) fn observe(&self, index: usize, status: &Status) {
        if transport_failed(status) || truc_ops::is_retry_safe(status) {
            if let Some(r) = self.list().get(index) {
                if r.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        replica = %r.address,
                        error = %status,
                        "hub replica out of rotation until it answers health checks"
                    );
                }
            }
        }
    }

    /// Runs `call` on a replica; when it provably did not reach a hub
    /// ([`did_not_reach_a_hub`]), again on the next replica, each replica
    /// at most once. Returns the replica that answered with the answer.
    pub(crate) async fn call<T, F, Fut>(&self, mut call: F) -> Result<(usize, T), Status>
    where
        F: FnMut(Pick) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let first = self.pick();
        let n = self.len().max(1);
        let mut pick = first.clone();
        let mut tried = 0;
        loop {
            let index = pick.index;
            match call(pick).await {
                Ok(v) => return Ok((index, v)),
                Err(status) => {
                    self.observe(index, &status);
                    tried += 1;
                    if !did_not_reach_a_hub(&status) || tried >= n {
                        return Err(status);
                    }
                    tracing::debug!(
                        replica = %self.address(index),
                        error = %status,
                        "the call did not reach this hub replica; trying the next"
                    );
                    pick = self.after(index);
                }
            }
        }
    }

    /// The replica after `index`: a healthy one if any, else the next.
    fn after(&self, index: usize) -> Pick {
        let n = self.len().max(1);
        let next = (1..n)
            .map(|i| (index + i) % n)
            .find(|&i| self.is_healthy(i))
            .unwrap_or((index + 1) % n);
        Pick {
            index: next,
            channel: self.channel(next).unwrap_or_else(|| self.pick().channel),
        }
    }

    /// Probes the replicas out of rotation every second until shutdown,
    /// putting back those whose health service answers SERVING.
    pub(crate) fn spawn_probes(&self, timeout: Duration, shutdown: Shutdown) {
        if self.configured.len() < 2
            && self
                .configured
                .iter()
                .all(|a| a.parse::<SocketAddr>().is_ok())
        {
            // One replica is always tried: nothing to put back.
            return;
        }
        let hubs = self.clone();
        every(PROBE_EVERY, shutdown, move || {
            let hubs = hubs.clone();
            async move { hubs.probe(timeout).await }
        });
    }

    /// One round of probes of the replicas out of rotation.
    pub(crate) async fn probe(&self, timeout: Duration) {
        for r in self.list().iter() {
            if r.healthy.load(Ordering::Relaxed) {
                continue;
            }
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            request.set_timeout(timeout);
            let serving = HealthClient::new(r.channel.clone())
                .check(request)
                .await
                .is_ok_and(|a| a.into_inner().status == ServingStatus::Serving as i32);
            if serving {
                tracing::info!(replica = %r.address, "hub replica back in rotation");
                r.healthy.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Runs `round` every `period` (the first after one period) until shutdown.
fn every<F, Fut>(period: Duration, shutdown: Shutdown, mut round: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = &mut stop => return,
            }
            round().await;
        }
    });
}

/// Whether the call failed in the transport (no answer from a hub), as
/// opposed to a status a hub sent: tonic keeps the transport error as the
/// status's source; a status read from the wire has none.
pub(crate) fn transport_failed(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// Whether the request provably never reached a hub: no connection (TCP or
/// TLS) could be made for it; the connection it was queued on closed
/// before it was handed to HTTP/2 (hyper's "canceled"); the hub's HTTP/2
/// layer said it did not process the stream ([`not_processed`]); or the hub
/// refused it with `truc-retry: safe` (`truc_ops::is_retry_safe`). A
/// connection that broke after the request was sent is not such a proof.
pub(crate) fn did_not_reach_a_hub(status: &Status) -> bool {
    if truc_ops::is_retry_safe(status) {
        return true;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some()
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled)
            || e.downcast_ref::<h2::Error>().is_some_and(not_processed)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the server's HTTP/2 layer said it did not process the stream
/// (RFC 9113, 6.8 and 8.7): a GOAWAY without error whose last stream id is
/// below the stream's (h2 also fails a stream opened after such a GOAWAY
/// with it), or a REFUSED_STREAM reset. A hub that drains and exits sends
/// that GOAWAY, and a call racing it gets this error. A GOAWAY carrying an
/// error fails every open stream, processed or not: not a proof.
fn not_processed(e: &h2::Error) -> bool {
    e.is_remote()
        && match e.reason() {
            Some(h2::Reason::NO_ERROR) => e.is_go_away(),
            Some(h2::Reason::REFUSED_STREAM) => e.is_reset(),
            _ => false,
        }
}

/// A plaintext HTTP/2 server that answers every connection with a GOAWAY
/// whose last stream id is 0 (no error), as a hub that drains and exits
/// does to a call racing its shutdown, then reads until the client hangs
/// up: no request is ever processed. Its address.
#[cfg(test)]
pub(crate) async fn goes_away() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // SETTINGS (empty), then GOAWAY: length 8, type 7, stream 0; last
    // stream id 0, error code NO_ERROR.
    const FRAMES: [u8; 26] = [
        0, 0, 0, 4, 0, 0, 0, 0, 0, //
        0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if socket.write_all(&FRAMES).await.is_err() {
                    return;
                }
                let mut buf = vec![0; 16 * 1024];
                while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    addr
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use truc_ops::{RETRY_HEADER, RETRY_SAFE};

    fn marked() -> Status {
        let mut s = Status::unavailable("draining");
        s.metadata_mut().insert(
            RETRY_HEADER,
            tonic::metadata::MetadataValue::from_static(RETRY_SAFE),
        );
        s
    }

    #[test]
    fn only_a_refusal_marked_safe_or_a_failed_connection_is_retried() {
        assert!(did_not_reach_a_hub(&marked()));
        // The hub's own UNAVAILABLE (a provider down) is not marked.
        assert!(!did_not_reach_a_hub(&Status::unavailable("provider down")));
        // The marker on another code is not a refusal before recording.
        let mut other = Status::internal("x");
        other.metadata_mut().insert(
            RETRY_HEADER,
            tonic::metadata::MetadataValue::from_static(RETRY_SAFE),
        );
        assert!(!did_not_reach_a_hub(&other));
        let connect = Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert_eq!(connect.code(), Code::Unavailable);
        assert!(did_not_reach_a_hub(&connect));
        // A broken connection after sending: an I/O error, not a connect error.
        let broken = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(!did_not_reach_a_hub(&broken));
        assert!(transport_failed(&broken));
    }

    fn three() -> Hubs {
        Hubs::of(
            (0..3)
                .map(|i| {
                    let a = format!("127.0.0.1:{}", 9 + i);
                    let c = Channel::from_shared(format!("http://{a}"))
                        .expect("uri")
                        .connect_lazy();
                    (a, c)
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn calls_go_round_robin_over_healthy_replicas_and_move_on_only_when_safe() {
        let hubs = three();
        let picked: Vec<usize> = (0..6).map(|_| hubs.pick().index).collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
        hubs.observe(1, &marked());
        assert!(!hubs.is_healthy(1));
        let picked: Vec<usize> = (0..4).map(|_| hubs.pick().index).collect();
        assert!(!picked.contains(&1), "{picked:?}");
        // A hub's own answer does not take a replica out.
        hubs.observe(0, &Status::unavailable("provider down"));
        assert!(hubs.is_healthy(0));

        // Refused-and-marked on every replica: each tried once, then the
        // refusal is the answer.
        let tried = Mutex::new(Vec::new());
        let result: Result<(usize, ()), Status> = hubs
            .call(|p| {
                tried.lock().expect("lock").push(p.index);
                async { Err(marked()) }
            })
            .await;
        assert_eq!(result.expect_err("refused").code(), Code::Unavailable);
        let mut seen = tried.lock().expect("lock").clone();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);

        // An unmarked failure is answered at once, never sent twice.
        let hubs = three();
        let tried = AtomicUsize::new(0);
        let result: Result<(usize, ()), Status> = hubs
            .call(|_| {
                tried.fetch_add(1, Ordering::Relaxed);
                async { Err(Status::unavailable("connection reset after sending")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(tried.load(Ordering::Relaxed), 1);

        // Learnt origins find their replica.
        hubs.learn_origin(2, "hub/replica-c");
        assert_eq!(hubs.for_origin("hub/replica-c").map(|p| p.index), Some(2));
        assert!(hubs.for_origin("hub/replica-a").is_none());
    }

    /// A server that takes the connection and the request, then drops
    /// the connection without an answer.
    async fn breaks_after_reading() -> (String, Arc<AtomicUsize>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let reads = Arc::new(AtomicUsize::new(0));
        let seen = reads.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0; 64 * 1024];
                // The preface, settings and the request's headers and body.
                if s.read(&mut buf).await.is_ok_and(|n| n > 0) {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                drop(s);
            }
        });
        (addr, reads)
    }

    /// An address where nothing listens (bound, then released).
    async fn refused() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr").to_string()
    }

    fn lazy(addr: &str) -> (String, Channel) {
        let c = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_lazy();
        (addr.to_string(), c)
    }

    async fn route_attempts(hubs: &Hubs) -> (Vec<usize>, Result<(usize, ()), Status>) {
        let tried = Mutex::new(Vec::new());
        let result = hubs
            .call(|p| {
                tried.lock().expect("lock").push(p.index);
                async move {
                    truc_proto::v1::hub_client::HubClient::new(p.channel)
                        .route(truc_proto::v1::DataRequest::default())
                        .await
                        .map(|_| ())
                }
            })
            .await;
        let tried = tried.lock().expect("lock").clone();
        (tried, result)
    }

    #[tokio::test]
    async fn a_refused_connection_moves_on_and_a_broken_one_does_not() {
        let (breaking, reads) = breaks_after_reading().await;
        let down = refused().await;

        // Refused first: the call goes on to the next replica, which takes
        // the request and breaks; that is answered, not sent a third time.
        let hubs = Hubs::of(vec![lazy(&down), lazy(&breaking)]);
        let (tried, result) = route_attempts(&hubs).await;
        assert_eq!(tried, [0, 1]);
        let status = result.expect_err("broken");
        assert!(!did_not_reach_a_hub(&status), "{status:?}");
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        assert!(!hubs.is_healthy(0) && !hubs.is_healthy(1));

        // Broken first: never sent to the other replica.
        let hubs = Hubs::of(vec![lazy(&breaking), lazy(&down)]);
        let (tried, result) = route_attempts(&hubs).await;
        assert_eq!(tried, [0], "{result:?}");
        assert_eq!(reads.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_call_the_hub_turned_away_with_goaway_moves_on_to_the_next_replica() {
        // A replica closing its connections at the end of a drain: the
        // stream is above the GOAWAY's last stream id, never processed.
        let leaving = goes_away().await;
        let (answering, reads) = breaks_after_reading().await;
        let hubs = Hubs::of(vec![lazy(&leaving), lazy(&answering)]);
        let (tried, result) = route_attempts(&hubs).await;
        assert_eq!(tried, [0, 1], "{result:?}");
        assert_eq!(reads.load(Ordering::Relaxed), 1, "sent once, to the second");
        assert!(!hubs.is_healthy(0), "out of rotation");
        // The error itself, as the node sees it: INTERNAL from tonic, with
        // the h2 GOAWAY in its source chain.
        let status = truc_proto::v1::hub_client::HubClient::new(lazy(&leaving).1)
            .route(truc_proto::v1::DataRequest::default())
            .await
            .expect_err("went away");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(did_not_reach_a_hub(&status) && transport_failed(&status));
    }

    #[tokio::test]
    async fn a_replica_out_of_rotation_comes_back_when_its_health_says_serving() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let hubs = Hubs::of(vec![lazy(&addr), lazy(&refused().await)]);
        hubs.observe(0, &marked());
        hubs.observe(1, &marked());
        hubs.probe(Duration::from_secs(5)).await;
        assert!(!hubs.is_healthy(0), "not serving yet");
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        hubs.probe(Duration::from_secs(5)).await;
        assert!(hubs.is_healthy(0));
        assert!(!hubs.is_healthy(1), "nothing answers there");
    }

    /// A resolver answering each lookup with the next of `answers`.
    fn scripted(answers: Vec<std::io::Result<Vec<&'static str>>>) -> Resolve {
        let answers = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        Arc::new(move |_name: String| {
            let next = answers.lock().expect("script").pop_front();
            Box::pin(async move {
                let found = next.expect("a scripted answer")?;
                Ok(found.iter().map(|a| a.parse().expect("ip:port")).collect())
            })
        })
    }

    fn addresses(hubs: &Hubs) -> Vec<String> {
        (0..hubs.len()).map(|i| hubs.address(i)).collect()
    }

    #[tokio::test]
    async fn a_name_stands_for_every_address_it_resolves_to_as_they_come_and_go() {
        const NAME: &str = "hub.truc.svc:7000";
        let hubs = Hubs::of(vec![lazy(NAME), lazy("127.0.0.1:9")]);
        let resolve = scripted(vec![
            Ok(vec!["10.0.0.2:7000", "10.0.0.1:7000"]),
            Ok(vec!["10.0.0.1:7000", "10.0.0.3:7000", "10.0.0.2:7000"]),
            Err(std::io::ErrorKind::TimedOut.into()),
            Ok(vec![]),
            Ok(vec!["10.0.0.3:7000"]),
        ]);
        // Before any lookup: the name itself.
        assert_eq!(addresses(&hubs), [NAME, "127.0.0.1:9"]);

        hubs.resolve(&resolve).await;
        assert_eq!(
            addresses(&hubs),
            ["10.0.0.1:7000", "10.0.0.2:7000", "127.0.0.1:9"]
        );
        // What the node knows of a replica stays with it.
        hubs.observe(1, &marked());
        hubs.learn_origin(0, "hub/truc-audit/hub-0");

        hubs.resolve(&resolve).await;
        assert_eq!(
            addresses(&hubs),
            [
                "10.0.0.1:7000",
                "10.0.0.2:7000",
                "10.0.0.3:7000",
                "127.0.0.1:9"
            ]
        );
        assert!(!hubs.is_healthy(1), "10.0.0.2 is still out of rotation");
        assert!(hubs.is_healthy(2));
        assert_eq!(
            hubs.for_origin("hub/truc-audit/hub-0").map(|p| p.index),
            Some(0)
        );
        // Calls spread over every healthy replica behind the name.
        let mut picked: Vec<usize> = (0..8).map(|_| hubs.pick().index).collect();
        picked.sort();
        picked.dedup();
        assert_eq!(picked, [0, 2, 3]);

        // A failed and an empty lookup keep what the name stood for.
        let held = hubs.pick();
        for _ in 0..2 {
            hubs.resolve(&resolve).await;
            assert_eq!(hubs.len(), 4);
        }

        hubs.resolve(&resolve).await;
        assert_eq!(addresses(&hubs), ["10.0.0.3:7000", "127.0.0.1:9"]);
        assert_eq!(
            hubs.for_origin("hub/truc-audit/hub-0").map(|p| p.index),
            None
        );
        // A call that picked a dropped replica still holds its channel.
        drop(held.channel);
    }
}
