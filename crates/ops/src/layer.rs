//! The tower layer every gRPC server runs: it counts each request by
//! service, method and final code (`grpc_server_handled_total`, and its
//! duration), and answers tonic's message-size refusals with
//! RESOURCE_EXHAUSTED (see `limits`). The code is read from the response
//! headers (trailers-only answers) or from the trailers.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use crate::{
    Metrics,
    limits::{GrpcResponse, rewrite},
};

/// Adds [`GrpcService`] around a service.
#[derive(Clone)]
pub struct GrpcLayer {
    metrics: Arc<Metrics>,
}

impl GrpcLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> GrpcLayer {
        GrpcLayer { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> GrpcService<S> {
        GrpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`GrpcLayer`].
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    metrics: Arc<Metrics>,
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
        Box::pin(async move {
            let mut response = future.await?;
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
