#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, time::Duration};

use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use truc_pki::{Identity, Layout, Role};
use truc_proto::v1::{
    DataRequest, DataResponse,
    backend_client::BackendClient,
    backend_server::{Backend, BackendServer},
};

use super::*;

/// A development PKI and a data directory.
struct Fixture {
    _dir: tempfile::TempDir,
    layout: Layout,
    data_dir: PathBuf,
    tls: TlsFiles,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let layout =
        truc_devca::init(&dir.path().join("pki"), &truc_devca::testing::options()).unwrap();
    let tls = layout.files(&Identity::new(Role::Hub, "hub").unwrap());
    Fixture {
        data_dir: dir.path().join("data"),
        _dir: dir,
        layout,
        tls,
    }
}

fn common<'a>(f: &'a Fixture, limits: &'a Limits) -> Common<'a> {
    Common {
        role: Role::Hub,
        name: "hub",
        peers: Role::Node,
        tls: &f.tls,
        data_dir: &f.data_dir,
        limits,
        audit: Options::default(),
        audit_key: None,
    }
}

/// Echoes the payload back.
struct Echo;

#[tonic::async_trait]
impl Backend for Echo {
    async fn invoke(
        &self,
        request: Request<DataRequest>,
    ) -> Result<Response<DataResponse>, Status> {
        Ok(Response::new(DataResponse {
            payload: request.into_inner().payload,
            ..DataResponse::default()
        }))
    }
}

async fn listeners() -> (TcpListener, TcpListener) {
    (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
}

async fn start(server: Server) -> Running {
    let (listener, ops) = listeners().await;
    server
        .start(listener, ops, Shutdown::new(), Duration::from_secs(1))
        .await
        .unwrap()
}

fn admin_channel(f: &Fixture, addr: SocketAddr) -> tonic::transport::Channel {
    let files = f
        .layout
        .files(&Identity::new(Role::Admin, "root-admin").unwrap());
    let tls = truc_pki::client_config_for(&files, Role::Hub).unwrap();
    truc_pki::channel(&addr.to_string(), "hub", tls).unwrap()
}

async fn health(channel: tonic::transport::Channel, service: &str) -> Result<i32, Status> {
    Ok(HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?
        .into_inner()
        .status)
}

#[tokio::test]
async fn health_reports_serving_for_each_service_added_and_knows_no_other() {
    let f = fixture();
    let limits = Limits::default();
    let server = Server::open(common(&f, &limits)).unwrap();
    let running = start(server.service(BackendServer::new(Echo))).await;
    let channel = admin_channel(&f, running.addr());
    for service in ["", "truc.v1.Backend"] {
        assert_eq!(
            health(channel.clone(), service).await.unwrap(),
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let other = health(channel, "truc.v1.Hub").await.unwrap_err();
    assert_eq!(other.code(), Code::NotFound, "{other:?}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_exactly_the_services_added() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let f = fixture();
    let limits = Limits::default();
    let server = Server::open(common(&f, &limits)).unwrap();
    let running = start(server.report_service(BackendServer::new(Echo))).await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(admin_channel(&f, running.addr()))
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "truc.v1.Backend",
        ]
    );
    running.stop().await.unwrap();
}

async fn invoke(f: &Fixture, addr: SocketAddr, bytes: usize) -> Result<usize, Status> {
    let answer = BackendClient::new(admin_channel(f, addr))
        .invoke(DataRequest {
            payload: vec![7u8; bytes].into(),
            ..DataRequest::default()
        })
        .await?;
    Ok(answer.into_inner().payload.len())
}

#[tokio::test]
async fn a_service_gets_the_configured_message_limit_and_a_report_service_does_not() {
    let limits = Limits {
        max_payload_bytes: 1024,
        ..Limits::default()
    };
    // The limit lets the payload and 64 KiB of envelope through.
    let over = limits.max_message_bytes() + 1;

    let f = fixture();
    let server = Server::open(common(&f, &limits)).unwrap();
    let running = start(server.service(BackendServer::new(Echo))).await;
    assert_eq!(invoke(&f, running.addr(), 1024).await.unwrap(), 1024);
    let refused = invoke(&f, running.addr(), over).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    running.stop().await.unwrap();

    let f = fixture();
    let server = Server::open(common(&f, &limits)).unwrap();
    let running = start(server.report_service(BackendServer::new(Echo))).await;
    assert_eq!(invoke(&f, running.addr(), over).await.unwrap(), over);
    running.stop().await.unwrap();
}

#[test]
fn a_data_dir_that_cannot_be_created_is_named_in_the_error() {
    let mut f = fixture();
    let file = f.data_dir.with_file_name("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    f.data_dir = file.join("data");
    let limits = Limits::default();
    let Err(err) = Server::open(common(&f, &limits)) else {
        panic!("a data dir under a file was created");
    };
    assert!(matches!(err, StartError::DataDir { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("cannot create data directory")
            && message.contains(&f.data_dir.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn stopping_closes_the_audit_log() {
    let f = fixture();
    let limits = Limits::default();
    let server = Server::open(common(&f, &limits)).unwrap();
    let audit = server.audit().clone();
    let tx = || truc_audit::Transaction::call("t1", "a", "b", "s", b"", 0);
    audit.append(tx()).await.expect("appended while open");
    let running = start(server).await;
    running.stop().await.unwrap();
    // A log only dropped would still take appends through this clone.
    let late = audit.append(tx()).await.unwrap_err();
    assert!(matches!(late, truc_audit::AuditError::Closed), "{late:?}");
    drop(audit);
    Server::open(common(&f, &limits)).expect("the data dir opens again");
}

#[test]
fn a_signing_log_gives_its_public_key_and_a_node_log_none() {
    let f = fixture();
    let limits = Limits::default();
    let key = f.layout.audit_key();
    let server = Server::open(Common {
        audit_key: Some((&key, truc_audit::sth::DEFAULT_ORIGIN)),
        ..common(&f, &limits)
    })
    .unwrap();
    let expected = truc_audit::sth::read_public_key(&f.layout.audit_public_key()).unwrap();
    assert_eq!(server.audit_public_key(), Some(expected.as_slice()));
    drop(server);

    let f = fixture();
    let server = Server::open(common(&f, &limits)).unwrap();
    assert_eq!(server.audit_public_key(), None);
}
