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

pub struct Proxy {
    pub url: String,
    pub operations: Arc<Mutex<Vec<String>>>,
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let operations = Arc::new(Mutex::new(Vec::new()));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let ops = operations.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (client, upstream, rewrite, ops) = (
                client.clone(),
                upstream.clone(),
                rewrite.clone(),
                ops.clone(),
            );
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (client, upstream, rewrite, ops) = (
                        client.clone(),
                        upstream.clone(),
                        rewrite.clone(),
                        ops.clone(),
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
    }
}
