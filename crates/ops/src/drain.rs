//! Maintenance mode: a process that drains stops taking calls and finishes
//! the ones it has, then stops.
//!
//! [`Drain::start`] (the admin `Drain` RPC, SIGTERM) turns gRPC health
//! NOT_SERVING for the whole server (`""`) and every service, makes
//! `/healthz` answer 503 `draining` and `truc_draining` 1. From then on
//! [`DrainLayer`] refuses every new call, before any handler (so before
//! anything is audited), with UNAVAILABLE, the message `<hub|node> is
//! draining`, and the metadata [`RETRY_HEADER`]`: `[`RETRY_SAFE`]: the
//! caller knows the call reached nothing and may send it to another replica.
//! Calls admitted before are counted until their response body ends; the
//! drain is over when none is left or its deadline passes, and the process
//! then shuts down. Health checks, reflection and the `Admin` service are
//! never refused, and watches (methods named `Watch…`, which never end by
//! themselves) are neither counted nor kept past the end of the drain: they
//! end with the same UNAVAILABLE and marker.
//!
//! A process's HTTP listeners (a node's REST door and VXP listener) take
//! part through [`Drain::http_layer`]: while draining, a new request gets
//! the listener's own refusal (a 503 in its JSON shape) with the same
//! marker header, and requests admitted before count in the same in-flight
//! number until their response body ends, so the process waits for them.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use http_body::Frame;
use tokio::{sync::watch, time::Instant};
use tonic::body::Body;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{Metrics, limits::GrpcResponse};

/// The metadata key on a refusal that says the call reached no handler.
pub const RETRY_HEADER: &str = "truc-retry";
/// Its value: sending the call again (elsewhere) cannot duplicate it.
pub const RETRY_SAFE: &str = "safe";

/// Whether `status` is a draining process's refusal: the call reached no
/// handler and may be sent to another replica.
pub fn is_retry_safe(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && status
            .metadata()
            .get(RETRY_HEADER)
            .is_some_and(|v| v == RETRY_SAFE)
}

/// Paths never refused: probes, reflection, and the admin service (a second
/// `Drain` must get its answer).
const EXEMPT: [&str; 4] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/truc.v1.Admin/",
];

/// Whether `path` (`/package.Service/Method`) is a watch: a stream that
/// ends only when its caller goes.
fn is_watch(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|m| m.starts_with("Watch"))
}

#[derive(Clone, Copy, Debug, Default)]
struct State {
    /// Since [`Drain::start`]: when the drain ends at the latest, on the
    /// (pausable) tokio clock and as Unix milliseconds.
    deadline: Option<(Instant, u64)>,
    /// Calls admitted and not finished (watches excluded).
    in_flight: u64,
    /// The drain is over: watches end, the process shuts down.
    over: bool,
    /// Cut short ([`Drain::cut`]): calls in flight are not waited for.
    cut: bool,
}

/// The maintenance mode of one server process; clones share it.
#[derive(Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

struct Inner {
    /// The refusal's message.
    message: String,
    state: watch::Sender<State>,
    health: HealthReporter,
    /// The services health reports on.
    services: Mutex<Vec<&'static str>>,
    metrics: Arc<Metrics>,
}

/// What [`Drain::start`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    /// False when the process was already draining: nothing changed.
    pub started: bool,
    /// When the drain ends at the latest (Unix milliseconds).
    pub deadline_unix_ms: u64,
    /// Calls in flight now.
    pub in_flight: u64,
}

impl Drain {
    /// The maintenance mode of a process called `what` (`hub`, `node`),
    /// reporting on `health` and into `metrics`.
    pub(crate) fn new(what: &str, health: HealthReporter, metrics: Arc<Metrics>) -> Drain {
        Drain {
            inner: Arc::new(Inner {
                message: format!("{what} is draining"),
                state: watch::Sender::new(State::default()),
                health,
                services: Mutex::new(Vec::new()),
                metrics,
            }),
        }
    }

    /// Reports `name` NOT_SERVING too when draining.
    pub(crate) fn add_service(&self, name: &'static str) {
        if let Ok(mut s) = self.inner.services.lock() {
            s.push(name);
        }
    }

    /// Starts draining, with `deadline` for the calls in flight, and
    /// returns once new calls are refused and health says NOT_SERVING.
    /// Draining again changes nothing (the first deadline stands).
    pub async fn start(&self, deadline: Duration) -> Started {
        let now = Instant::now();
        let unix =
            crate::now_ms().saturating_add(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
        let started = self.inner.state.send_if_modified(|s| {
            if s.deadline.is_some() {
                return false;
            }
            s.deadline = Some((now + deadline, unix));
            true
        });
        if started {
            tracing::info!(?deadline, in_flight = self.in_flight(), "draining");
            self.inner.metrics.set_draining(true);
            let services = self
                .inner
                .services
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            for name in std::iter::once("").chain(services) {
                self.inner
                    .health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        }
        let state = *self.inner.state.borrow();
        Started {
            started,
            deadline_unix_ms: state.deadline.map_or(unix, |(_, u)| u),
            in_flight: state.in_flight,
        }
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.state.borrow().deadline.is_some()
    }

    /// Calls in flight (watches excluded).
    pub fn in_flight(&self) -> u64 {
        self.inner.state.borrow().in_flight
    }

    /// Completes once draining has started.
    pub fn started(&self) -> impl Future<Output = ()> + Send + 'static {
        self.wait_for(|s| s.deadline.is_some())
    }

    /// Completes once the drain is over (see [`Drain::finish`]).
    fn over(&self) -> impl Future<Output = ()> + Send + 'static {
        self.wait_for(|s| s.over)
    }

    fn wait_for(
        &self,
        mut f: impl FnMut(&State) -> bool + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.state.subscribe();
        async move {
            // The sender lives as long as `rx`'s `Inner`: no error.
            let _ = rx.wait_for(|s| f(s)).await;
        }
    }

    /// Once draining has started, waits until no call is in flight or the
    /// deadline passes, then ends the drain (watches end). True when every
    /// call finished in time.
    pub(crate) async fn finish(&self) -> bool {
        self.started().await;
        let Some((deadline, _)) = self.inner.state.borrow().deadline else {
            return false;
        };
        let idle = self.wait_for(|s| s.in_flight == 0 || s.cut);
        let finished =
            tokio::time::timeout_at(deadline, idle).await.is_ok() && !self.inner.state.borrow().cut;
        self.inner.state.send_modify(|s| s.over = true);
        finished
    }

    /// Ends a drain now (a second SIGTERM): calls still in flight are cut.
    pub fn cut(&self) {
        self.inner.state.send_modify(|s| s.cut = true);
    }

    /// Time left until the deadline (none once cut); None when not draining.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let state = *self.inner.state.borrow();
        let (deadline, _) = state.deadline?;
        if state.cut {
            return Some(Duration::ZERO);
        }
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Counts a new call in flight, unless draining.
    fn admit(&self) -> Option<InFlight> {
        self.inner
            .state
            .send_if_modified(|s| {
                if s.deadline.is_some() {
                    return false;
                }
                s.in_flight += 1;
                true
            })
            .then(|| InFlight(self.clone()))
    }

    /// The refusal of a call made while draining.
    fn refusal(&self) -> tonic::Status {
        let mut status = tonic::Status::unavailable(self.inner.message.clone());
        status.metadata_mut().insert(
            RETRY_HEADER,
            tonic::metadata::MetadataValue::from_static(RETRY_SAFE),
        );
        status
    }
}

/// One call in flight; dropping it ends it.
struct InFlight(Drain);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .inner
            .state
            .send_modify(|s| s.in_flight = s.in_flight.saturating_sub(1));
    }
}

/// Adds [`DrainService`] around a service.
#[derive(Clone)]
pub(crate) struct DrainLayer {
    drain: Drain,
}

impl DrainLayer {
    pub(crate) fn new(drain: Drain) -> DrainLayer {
        DrainLayer { drain }
    }
}

impl<S> tower::Layer<S> for DrainLayer {
    type Service = DrainService<S>;

    fn layer(&self, inner: S) -> DrainService<S> {
        DrainService {
            inner,
            drain: self.drain.clone(),
        }
    }
}

/// See [`DrainLayer`].
#[derive(Clone)]
pub(crate) struct DrainService<S> {
    inner: S,
    drain: Drain,
}

impl<S, B> tower_service::Service<http::Request<B>> for DrainService<S>
where
    S: tower_service::Service<http::Request<B>, Response = GrpcResponse>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let exempt = EXEMPT.iter().any(|p| path.starts_with(p));
        let watch = is_watch(path);
        let guard = match (exempt, watch) {
            (true, _) => None,
            (false, true) if self.drain.is_draining() => {
                return refuse(&self.drain);
            }
            (false, true) => None,
            (false, false) => match self.drain.admit() {
                Some(guard) => Some(guard),
                None => return refuse(&self.drain),
            },
        };
        let drain = self.drain.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| {
                if watch {
                    Body::new(UntilOver {
                        inner: body,
                        over: Box::pin(drain.over()),
                        refusal: Some(drain.refusal()),
                    })
                } else if let Some(guard) = guard {
                    // The call is in flight until its body ends or is dropped.
                    Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                        let _in_flight = &guard;
                        frame
                    }))
                } else {
                    body
                }
            }))
        })
    }
}

/// A listener's answer to a request refused while draining, from its URI
/// (the VXP listener's shape depends on the call).
pub type HttpRefusal = Arc<dyn Fn(&http::Uri) -> axum::response::Response + Send + Sync>;

impl Drain {
    /// A layer for an HTTP router: while draining, each new request is
    /// answered by `refusal` (plus [`RETRY_HEADER`]`: `[`RETRY_SAFE`]) before
    /// reaching the router; admitted requests are in flight until their
    /// response body ends or is dropped.
    pub fn http_layer(
        &self,
        refusal: impl Fn(&http::Uri) -> axum::response::Response + Send + Sync + 'static,
    ) -> HttpDrainLayer {
        HttpDrainLayer {
            drain: self.clone(),
            refusal: Arc::new(refusal),
        }
    }
}

/// See [`Drain::http_layer`].
#[derive(Clone)]
pub struct HttpDrainLayer {
    drain: Drain,
    refusal: HttpRefusal,
}

impl<S> tower::Layer<S> for HttpDrainLayer {
    type Service = HttpDrainService<S>;

    fn layer(&self, inner: S) -> HttpDrainService<S> {
        HttpDrainService {
            inner,
            drain: self.drain.clone(),
            refusal: self.refusal.clone(),
        }
    }
}

/// See [`Drain::http_layer`].
#[derive(Clone)]
pub struct HttpDrainService<S> {
    inner: S,
    drain: Drain,
    refusal: HttpRefusal,
}

impl<S, B> tower_service::Service<http::Request<B>> for HttpDrainService<S>
where
    S: tower_service::Service<http::Request<B>, Response = axum::response::Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<axum::response::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(guard) = self.drain.admit() else {
            let mut response = (self.refusal)(request.uri());
            response
                .headers_mut()
                .insert(RETRY_HEADER, http::HeaderValue::from_static(RETRY_SAFE));
            return Box::pin(std::future::ready(Ok(response)));
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| {
                axum::body::Body::new(Counted {
                    inner: body,
                    _in_flight: guard,
                })
            }))
        })
    }
}

/// A response body that is in flight until it ends or is dropped; its size
/// stays known (a `Content-Length` answer stays one: the VXP SDK's readers
/// and simple clients expect it).
struct Counted {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = tonic::codegen::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn refuse<E: Send + 'static>(
    drain: &Drain,
) -> Pin<Box<dyn Future<Output = Result<GrpcResponse, E>> + Send>> {
    let response = drain.refusal().into_http();
    Box::pin(std::future::ready(Ok(response)))
}

/// A watch's body, ended with the drain's refusal once the drain is over.
struct UntilOver {
    inner: Body,
    over: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Taken when sent.
    refusal: Option<tonic::Status>,
}

impl http_body::Body for UntilOver {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(refusal) = &this.refusal else {
            return Poll::Ready(None);
        };
        if this.over.as_mut().poll(cx).is_ready() {
            let trailers = refusal.clone().into_http::<()>().into_parts().0.headers;
            this.refusal = None;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.refusal = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tower::{Layer, ServiceExt};
    use tower_service::Service;

    fn drain() -> Drain {
        let (health, _) = tonic_health::server::health_reporter();
        Drain::new("hub", health, Arc::new(Metrics::new()))
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    /// A service answering OK, counting the calls that reached it.
    fn counting(
        reached: Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl tower_service::Service<
        http::Request<()>,
        Response = GrpcResponse,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<GrpcResponse, std::convert::Infallible>> + Send,
    > + Clone {
        tower::service_fn(move |_req: http::Request<()>| {
            reached.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok(http::Response::new(Body::empty())))
        })
    }

    #[tokio::test]
    async fn a_call_made_while_draining_is_refused_before_the_handler_with_the_marker() {
        let d = drain();
        let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let svc = DrainLayer::new(d.clone()).layer(counting(reached.clone()));
        let ok = svc
            .clone()
            .oneshot(request("/truc.v1.Hub/Route"))
            .await
            .unwrap();
        assert!(!ok.headers().contains_key("grpc-status"));
        drop(ok);
        assert_eq!(d.in_flight(), 0);

        assert!(d.start(Duration::from_secs(5)).await.started);
        let refused = svc
            .clone()
            .oneshot(request("/truc.v1.Hub/Route"))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "hub is draining");
        assert!(is_retry_safe(&status), "{:?}", status.metadata());
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);

        // Health, reflection and Admin still reach their handlers.
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/truc.v1.Admin/Drain",
        ] {
            let r = svc.clone().oneshot(request(path)).await.unwrap();
            assert!(!r.headers().contains_key("grpc-status"), "{path}");
        }
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    type Frames = tokio::sync::mpsc::Sender<Result<Frame<tonic::codegen::Bytes>, tonic::Status>>;

    /// A service whose one answer is a body open until the test ends it
    /// (drops the sender).
    fn open_answer() -> (
        Frames,
        impl tower_service::Service<
            http::Request<()>,
            Response = GrpcResponse,
            Error = std::convert::Infallible,
            Future = std::future::Ready<Result<GrpcResponse, std::convert::Infallible>>,
        >,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let body = Mutex::new(Some(Body::new(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))));
        let service = tower::service_fn(move |_req: http::Request<()>| {
            let body = body.lock().unwrap().take().unwrap_or_else(Body::empty);
            std::future::ready(Ok(http::Response::new(body)))
        });
        (tx, service)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_admitted_before_stays_in_flight_until_its_body_ends() {
        let d = drain();
        let (frames, answer) = open_answer();
        let svc = DrainLayer::new(d.clone()).layer(answer);
        let response = svc.oneshot(request("/truc.v1.Hub/Relay")).await.unwrap();
        assert_eq!(d.in_flight(), 1);
        let first = d.start(Duration::from_secs(30)).await;
        assert!(first.started);
        assert_eq!(first.in_flight, 1);
        // Idempotent: a second start keeps the first deadline.
        let second = d.start(Duration::from_secs(1)).await;
        assert!(!second.started);
        assert_eq!(second.deadline_unix_ms, first.deadline_unix_ms);

        let finish = tokio::spawn({
            let d = d.clone();
            async move { d.finish().await }
        });
        tokio::task::yield_now().await;
        assert!(!finish.is_finished(), "a call is in flight");
        // The handler answered; its body ends.
        drop(frames);
        let mut body = response.into_body();
        assert!(http_body_util::BodyExt::frame(&mut body).await.is_none());
        drop(body);
        assert!(finish.await.unwrap(), "finished before the deadline");
        assert_eq!(d.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_at_its_deadline_with_a_call_still_open() {
        let d = drain();
        let (_frames, answer) = open_answer();
        let svc = DrainLayer::new(d.clone()).layer(answer);
        let _open = svc.oneshot(request("/truc.v1.Hub/Relay")).await.unwrap();
        d.start(Duration::from_secs(30)).await;
        let started = Instant::now();
        assert!(!d.finish().await);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(d.remaining(), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_drain_ends_at_once_with_a_call_still_open() {
        let d = drain();
        let (_frames, answer) = open_answer();
        let svc = DrainLayer::new(d.clone()).layer(answer);
        let _open = svc.oneshot(request("/truc.v1.Hub/Relay")).await.unwrap();
        d.start(Duration::from_secs(30)).await;
        let finish = tokio::spawn({
            let d = d.clone();
            async move { d.finish().await }
        });
        tokio::task::yield_now().await;
        let started = Instant::now();
        d.cut();
        assert!(!finish.await.unwrap());
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(d.remaining(), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn a_watch_is_not_in_flight_and_ends_with_the_marker_when_the_drain_is_over() {
        let d = drain();
        let (tx, watch) = open_answer();
        let svc = DrainLayer::new(d.clone()).layer(watch);
        let response = svc
            .oneshot(request("/truc.v1.Agency/WatchInbox"))
            .await
            .unwrap();
        assert_eq!(d.in_flight(), 0);
        let mut body = response.into_body();
        tx.send(Ok(Frame::data(tonic::codegen::Bytes::from_static(
            b"event",
        ))))
        .await
        .unwrap();
        let frame = http_body_util::BodyExt::frame(&mut body)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), "event");

        d.start(Duration::from_secs(5)).await;
        assert!(d.finish().await);
        let frame = http_body_util::BodyExt::frame(&mut body)
            .await
            .unwrap()
            .unwrap();
        let trailers = frame.into_trailers().unwrap();
        let status = tonic::Status::from_header_map(&trailers).unwrap();
        assert!(is_retry_safe(&status), "{status:?}");
        assert!(http_body_util::BodyExt::frame(&mut body).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_http_request_is_in_flight_until_its_body_ends_and_refused_while_draining() {
        use axum::response::IntoResponse;
        let d = drain();
        let (frames, answer) = open_answer();
        let answer =
            tower::ServiceExt::map_response(answer, |r: GrpcResponse| r.map(axum::body::Body::new));
        let mut svc = d
            .http_layer(|uri| {
                (
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    uri.path().to_string(),
                )
                    .into_response()
            })
            .layer(answer);
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(request("/v1/call/x"))
            .await
            .unwrap();
        assert_eq!(d.in_flight(), 1);
        d.start(Duration::from_secs(30)).await;

        let refused = svc
            .ready()
            .await
            .unwrap()
            .call(request("/v1/call/y"))
            .await
            .unwrap();
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[RETRY_HEADER], RETRY_SAFE);
        let text = http_body_util::BodyExt::collect(refused.into_body())
            .await
            .unwrap();
        assert_eq!(text.to_bytes(), "/v1/call/y", "the listener's own refusal");
        assert_eq!(d.in_flight(), 1, "a refusal is not in flight");

        let finish = tokio::spawn({
            let d = d.clone();
            async move { d.finish().await }
        });
        tokio::task::yield_now().await;
        assert!(!finish.is_finished(), "the admitted request is in flight");
        drop(frames);
        let mut body = response.into_body();
        assert!(http_body_util::BodyExt::frame(&mut body).await.is_none());
        drop(body);
        assert!(finish.await.unwrap(), "finished before the deadline");
    }

    #[tokio::test]
    async fn an_admitted_http_answer_keeps_its_length() {
        let d = drain();
        let svc = d
            .http_layer(|_| axum::response::Response::new(axum::body::Body::empty()))
            .layer(tower::service_fn(|_req: http::Request<()>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(
                    axum::response::Response::new(axum::body::Body::from("hello")),
                ))
            }));
        let response = svc.oneshot(request("/sendEdoc")).await.unwrap();
        assert_eq!(d.in_flight(), 1);
        assert_eq!(http_body::Body::size_hint(response.body()).exact(), Some(5));
        drop(response);
        assert_eq!(d.in_flight(), 0);
    }

    #[tokio::test]
    async fn health_reports_not_serving_overall_and_for_each_service() {
        let (health, _) = tonic_health::server::health_reporter();
        let metrics = Arc::new(Metrics::new());
        let d = Drain::new("node", health.clone(), metrics.clone());
        d.add_service("truc.v1.Node");
        health
            .set_service_status("truc.v1.Node", ServingStatus::Serving)
            .await;
        assert!(!metrics.is_draining());
        d.start(Duration::from_secs(1)).await;
        assert!(metrics.is_draining());
        use tonic_health::pb::{HealthCheckRequest, health_server::Health};
        let health_service = tonic_health::server::HealthService::from_health_reporter(health);
        for service in ["", "truc.v1.Node"] {
            let status = health_service
                .check(tonic::Request::new(HealthCheckRequest {
                    service: service.into(),
                }))
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::NotServing as i32,
                "{service:?}"
            );
        }
    }
}
