//! The tower layer every gRPC server runs: it counts each request by
//! service, method and final code (`grpc_server_handled_total`, and its
//! duration), answers tonic's message-size refusals with
//! RESOURCE_EXHAUSTED (see `limits`), and answers DEADLINE_EXCEEDED for a
//! handler that has not answered within the server's request timeout (a
//! call that never sends its last message holds nothing longer). The code
//! is read from the response headers (trailers-only answers) or from the
//! trailers.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::{
    Metrics,
    limits::{GrpcResponse, rewrite},
};

/// Adds [`GrpcService`] around a service.
#[derive(Clone)]
pub(crate) struct GrpcLayer {
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl GrpcLayer {
    /// A layer recording into `metrics`, giving each handler `timeout` to answer.
    pub(crate) fn new(metrics: Arc<Metrics>, timeout: Duration) -> GrpcLayer {
        GrpcLayer { metrics, timeout }
    }
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> GrpcService<S> {
        GrpcService {
            inner,
            metrics: self.metrics.clone(),
            timeout: self.timeout,
        }
    }
}

/// See [`GrpcLayer`].
#[derive(Clone)]
pub(crate) struct GrpcService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

fn code_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from_i32(v.parse().ok()?))
}

impl<S, B> tower_service::Service<http::Request<B>> for GrpcService<S>
where
    S: tower_service::Service<http::Request<B>, Response = GrpcResponse>,
    S::Future: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let future = self.inner.call(request);
        let timeout = self.timeout;
        Box::pin(async move {
            let mut response = match tokio::time::timeout(timeout, future).await {
                Ok(response) => response?,
                Err(_) => tonic::Status::deadline_exceeded(format!(
                    "no answer within the server's request timeout of {} ms",
                    timeout.as_millis()
                ))
                .into_http(),
            };
            if response.headers().contains_key("grpc-status") {
                rewrite(response.headers_mut());
                if let Some(code) = code_of(response.headers()) {
                    metrics.observe_grpc(&path, code, started.elapsed().as_secs_f64());
                }
                return Ok(response);
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                    match frame.into_trailers() {
                        Ok(mut trailers) => {
                            rewrite(&mut trailers);
                            let code = code_of(&trailers).unwrap_or(tonic::Code::Ok);
                            metrics.observe_grpc(&path, code, started.elapsed().as_secs_f64());
                            http_body::Frame::trailers(trailers)
                        }
                        Err(frame) => frame,
                    }
                }))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tower::{Layer, ServiceExt};

    #[tokio::test]
    async fn a_handler_that_never_answers_gets_deadline_exceeded() {
        let metrics = Arc::new(Metrics::new());
        let never = tower::service_fn(|_req: http::Request<()>| {
            std::future::pending::<Result<GrpcResponse, std::convert::Infallible>>()
        });
        let svc = GrpcLayer::new(metrics.clone(), Duration::from_millis(50)).layer(never);
        let request = http::Request::builder()
            .uri("/truc.v1.Agency/SendDocument")
            .body(())
            .unwrap();
        let response = svc.oneshot(request).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "4");
        let text = metrics.encode();
        assert!(
            text.contains(r#"grpc_server_handled_total{grpc_service="truc.v1.Agency",grpc_method="SendDocument",grpc_code="DeadlineExceeded"} 1"#),
            "{text}"
        );
    }
}
