//! The demo's external authorizer: a real gRPC server speaking Envoy's
//! `envoy.service.auth.v3.Authorization/Check`, as an OPA or a custom authorizer would.
//!
//! Its rule is deliberately simple so the tour can show both outcomes: a request carrying
//! `x-demo-approval: granted` is allowed (and the server adds `x-ext-authz: allowed by demo-authz`
//! for the app to see); anything else is denied with 403 and a body naming the missing approval.

use std::net::SocketAddr;

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use trustmesh_proxy::extauthz::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use trustmesh_proxy::extauthz::proto::envoy::r#type::v3::HttpStatus;
use trustmesh_proxy::extauthz::proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use trustmesh_proxy::extauthz::proto::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use trustmesh_proxy::extauthz::proto::google::rpc;

/// gRPC status codes used in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;

struct DemoAuthz;

#[tonic::async_trait]
impl Authorization for DemoAuthz {
    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let http = req
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        let approved = http
            .headers
            .get("x-demo-approval")
            .is_some_and(|v| v == "granted");
        let header = |k: &str, v: &str| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = if approved {
            CheckResponse {
                status: Some(rpc::Status {
                    code: OK,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![header("x-ext-authz", "allowed by demo-authz")],
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(rpc::Status {
                    code: PERMISSION_DENIED,
                    message: "no approval".into(),
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 403 }),
                    body: format!(
                        "demo-authz: {} {} needs header x-demo-approval: granted",
                        http.method, http.path
                    ),
                    headers: vec![header("x-ext-authz", "denied by demo-authz")],
                })),
                ..Default::default()
            }
        };
        Ok(Response::new(resp))
    }
}

/// Starts the authorizer on a loopback port and returns its address.
pub async fn start() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    serve(listener);
    Ok(addr)
}

/// Serves the authorizer on `listener` (wherever it was bound) until the runtime stops.
pub fn serve(listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(DemoAuthz))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
}
