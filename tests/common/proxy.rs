//! A proxy between tsprov and LocalStack for tests: it forwards every request,
//! records the operation called, and may rewrite a response (to hold a resource
//! in a pending state, say).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// (operation, response body) -> response body.
pub type Rewrite = Arc<dyn Fn(&str, String) -> String + Send + Sync>;

/// Whether a call is read-only: GET or HEAD (REST services), or an operation named
/// Describe*, List*, Get* (query and JSON services).
pub fn is_read_only(method: &hyper::Method, operation: &str) -> bool {
    if method == hyper::Method::GET || method == hyper::Method::HEAD {
        return true;
    }
    ["Describe", "List", "Get"]
        .iter()
        .any(|p| operation.starts_with(p))
}

pub struct Proxy {
    pub url: String,
    pub operations: Arc<Mutex<Vec<String>>>,
    /// Calls refused because they were not read-only (with `start_read_only`).
    pub refused: Arc<Mutex<Vec<String>>>,
}

/// A proxy that answers 403 AccessDenied to every call that is not read-only, as
/// credentials with only Describe/List/Get permissions would.
pub async fn start_read_only(upstream: String) -> Proxy {
    start_gated(upstream, Arc::new(|_, body| body), true).await
}

/// The operation of a request: `Action=` of query protocols (EC2), else the JSON target.
fn operation(headers: &hyper::HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    let body = String::from_utf8_lossy(body);
    body.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("?")
        .to_string()
}

pub async fn start(upstream: String, rewrite: Rewrite) -> Proxy {
    start_gated(upstream, rewrite, false).await
}

async fn start_gated(upstream: String, rewrite: Rewrite, read_only: bool) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let operations = Arc::new(Mutex::new(Vec::new()));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let ops = operations.clone();
    let refused = Arc::new(Mutex::new(Vec::new()));
    let refused_log = refused.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (client, upstream, rewrite, ops, refused_log) = (
                client.clone(),
                upstream.clone(),
                rewrite.clone(),
                ops.clone(),
                refused_log.clone(),
            );
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (client, upstream, rewrite, ops, refused_log) = (
                        client.clone(),
                        upstream.clone(),
                        rewrite.clone(),
                        ops.clone(),
                        refused_log.clone(),
                    );
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let op = operation(&parts.headers, &body);
                        ops.lock().unwrap().push(op.clone());
                        if read_only && !is_read_only(&parts.method, &op) {
                            refused_log.lock().unwrap().push(format!(
                                "{} {} {op}",
                                parts.method,
                                parts.uri.path()
                            ));
                            let denied = "<ErrorResponse><Error><Code>AccessDenied</Code><Message>read-only credentials</Message></Error></ErrorResponse>";
                            return Ok::<_, Infallible>(
                                Response::builder()
                                    .status(403)
                                    .body(Full::new(Bytes::from(denied)))
                                    .unwrap(),
                            );
                        }
                        let uri = format!(
                            "{upstream}{}",
                            parts
                                .uri
                                .path_and_query()
                                .map(|p| p.as_str())
                                .unwrap_or("/")
                        );
                        let mut forward = Request::builder().method(parts.method).uri(uri);
                        for (k, v) in parts.headers.iter() {
                            if k != "host" {
                                forward = forward.header(k, v);
                            }
                        }
                        let answer = client
                            .request(forward.body(Full::new(body)).unwrap())
                            .await
                            .unwrap();
                        let (mut parts, body) = answer.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let body = rewrite(&op, String::from_utf8_lossy(&body).into_owned());
                        parts.headers.remove("content-length");
                        parts.headers.remove("transfer-encoding");
                        Ok::<_, Infallible>(Response::from_parts(
                            parts,
                            Full::new(Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Proxy {
        url: format!("http://{addr}"),
        operations,
        refused,
    }
}
