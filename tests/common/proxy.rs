//! A proxy between tsprov and LocalStack for tests. It forwards every request and
//! records the operation called; it may rewrite responses (to hold a resource in a
//! pending state), refuse every mutating call (read-only credentials), or inject
//! the faults real AWS shows: throttling, 500s, dropped connections before and
//! after the request is served, added latency, `NotFound` for a resource created
//! moments ago, and quota errors.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// What goes wrong, and how often. Rates are shares of calls, 0.0 to 1.0.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Calls answered with throttling, a 500, or a dropped connection (a quarter each;
    /// half the drops happen after the request was served, so its response is lost).
    pub rate: f64,
    /// Added to every call before it is forwarded.
    pub latency: Duration,
    /// EC2 calls naming a resource created in the last 3 s answered `Invalid*ID.NotFound`.
    pub not_found_after_create: f64,
    /// Describes of one NAT gateway, EKS cluster or node group answered as still pending.
    pub hold_pending: f64,
    /// (operation, code): every call of the operation answered with this quota error.
    pub quota: Vec<(&'static str, &'static str)>,
    pub seed: u64,
}

pub struct Proxy {
    pub url: String,
    pub operations: Arc<Mutex<Vec<String>>>,
    /// Calls refused because they were not read-only (with `start_read_only`).
    pub refused: Arc<Mutex<Vec<String>>>,
    /// Faults injected, by kind.
    pub injected: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Proxy {
    pub fn calls(&self) -> usize {
        self.operations.lock().unwrap().len()
    }
    pub fn injected_total(&self) -> u64 {
        self.injected.lock().unwrap().values().sum()
    }
}

#[derive(Clone, Default)]
struct Config {
    rewrite: Option<Rewrite>,
    read_only: bool,
    faults: Faults,
}

pub async fn start(upstream: String, rewrite: Rewrite) -> Proxy {
    serve(
        upstream,
        Config {
            rewrite: Some(rewrite),
            ..Config::default()
        },
    )
    .await
}

/// A proxy that answers 403 AccessDenied to every call that is not read-only, as
/// credentials with only Describe/List/Get permissions would.
pub async fn start_read_only(upstream: String) -> Proxy {
    serve(
        upstream,
        Config {
            read_only: true,
            ..Config::default()
        },
    )
    .await
}

pub async fn start_faulty(upstream: String, faults: Faults) -> Proxy {
    serve(
        upstream,
        Config {
            faults,
            ..Config::default()
        },
    )
    .await
}

/// The AWS service a request is for, from its SigV4 credential scope.
fn service(headers: &hyper::HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("?")
        .to_string()
}

/// The operation of a request: `Action=` of query protocols, the JSON target, or
/// `METHOD /path` of REST services (EKS, S3).
fn operation(
    method: &hyper::Method,
    uri: &hyper::Uri,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    let text = String::from_utf8_lossy(body);
    if let Some(action) = text.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
        return action.to_string();
    }
    format!("{method} {}", uri.path())
}

/// A small deterministic generator, so a failing seed can be replayed.
struct Dice(AtomicU64);

impl Dice {
    fn roll(&self) -> f64 {
        let mut z = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Throttle,
    Internal,
    DropBefore,
    DropAfter,
}

/// An error answer in the wire format of the service's protocol.
fn error_answer(service: &str, status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let (content_type, body) = match service {
        "ec2" => (
            "text/xml",
            format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>tsprov-proxy</RequestID></Response>"),
        ),
        "s3" => (
            "application/xml",
            format!("<Error><Code>{code}</Code><Message>{message}</Message><RequestId>tsprov-proxy</RequestId></Error>"),
        ),
        "kms" | "logs" => (
            "application/x-amz-json-1.1",
            format!("{{\"__type\":\"{code}\",\"message\":\"{message}\"}}"),
        ),
        "eks" => (
            "application/json",
            format!("{{\"message\":\"{message}\"}}"),
        ),
        _ => (
            "text/xml",
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>tsprov-proxy</RequestId></ErrorResponse>"),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-errortype", code)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn throttle(service: &str) -> Response<Full<Bytes>> {
    match service {
        "ec2" => error_answer(
            service,
            503,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        "s3" => error_answer(service, 503, "SlowDown", "Please reduce your request rate."),
        "kms" | "logs" | "eks" => {
            error_answer(service, 400, "ThrottlingException", "Rate exceeded")
        }
        _ => error_answer(service, 400, "Throttling", "Rate exceeded"),
    }
}

/// EC2 ids in a create's answer, and the NotFound code EC2 gives for each prefix.
const EC2_IDS: [(&str, &str); 7] = [
    ("vpc-", "InvalidVpcID.NotFound"),
    ("subnet-", "InvalidSubnetID.NotFound"),
    ("igw-", "InvalidInternetGatewayID.NotFound"),
    ("eipalloc-", "InvalidAllocationID.NotFound"),
    ("nat-", "NatGatewayNotFound"),
    ("rtb-", "InvalidRouteTableID.NotFound"),
    ("sg-", "InvalidGroup.NotFound"),
];

fn ids_in(text: &str) -> Vec<(String, &'static str)> {
    let mut found = Vec::new();
    for (prefix, code) in EC2_IDS {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let tail = &rest[at + prefix.len()..];
            let hex = tail
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(tail.len());
            let before_ok = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric();
            if hex >= 8 && before_ok {
                found.push((format!("{prefix}{}", &tail[..hex]), code));
            }
            rest = &tail[hex..];
        }
    }
    found
}

/// Shows a single resource's describe as still pending.
fn hold(op: &str, body: String) -> String {
    if op == "DescribeNatGateways" {
        return body.replace("<state>available</state>", "<state>pending</state>");
    }
    if op.starts_with("GET /clusters/") {
        return body
            .replace("\"status\": \"ACTIVE\"", "\"status\": \"CREATING\"")
            .replace("\"status\":\"ACTIVE\"", "\"status\":\"CREATING\"");
    }
    body
}

struct State {
    config: Config,
    dice: Dice,
    created: Mutex<HashMap<String, (Instant, &'static str)>>,
    operations: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<String>>>,
    injected: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl State {
    fn count(&self, what: &str) {
        *self
            .injected
            .lock()
            .unwrap()
            .entry(what.into())
            .or_default() += 1;
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn answer(
    state: Arc<State>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    upstream: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let service = service(&parts.headers);
    let op = operation(&parts.method, &parts.uri, &parts.headers, &body);
    state.operations.lock().unwrap().push(op.clone());
    let faults = &state.config.faults;
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if state.config.read_only && !is_read_only(&parts.method, &op) {
        state
            .refused
            .lock()
            .unwrap()
            .push(format!("{} {} {op}", parts.method, parts.uri.path()));
        return Ok(error_answer(
            &service,
            403,
            "AccessDenied",
            "read-only credentials",
        ));
    }
    if let Some((_, code)) = faults.quota.iter().find(|(o, _)| *o == op) {
        {
            state.count(code);
            return Ok(error_answer(
                &service,
                400,
                code,
                "You have reached the quota for this resource.",
            ));
        }
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if service == "ec2" && faults.not_found_after_create > 0.0 && !op.starts_with("Create") {
        let recent = {
            let created = state.created.lock().unwrap();
            ids_in(&text).into_iter().find_map(|(id, _)| {
                created
                    .get(&id)
                    .filter(|(at, _)| at.elapsed() < Duration::from_secs(3))
                    .map(|(_, code)| (id, *code))
            })
        };
        if let Some((id, code)) = recent {
            if state.dice.roll() < faults.not_found_after_create {
                state.count("not found after create");
                return Ok(error_answer(
                    &service,
                    400,
                    code,
                    &format!("The ID '{id}' does not exist"),
                ));
            }
        }
    }
    let fault = (state.dice.roll() < faults.rate).then(|| match (state.dice.roll() * 4.0) as u32 {
        0 => Fault::Throttle,
        1 => Fault::Internal,
        2 => Fault::DropBefore,
        _ => Fault::DropAfter,
    });
    match fault {
        Some(Fault::Throttle) => {
            state.count("throttling");
            return Ok(throttle(&service));
        }
        Some(Fault::Internal) => {
            state.count("500 internal error");
            let code = if service == "ec2" || service == "s3" {
                "InternalError"
            } else {
                "InternalFailure"
            };
            return Ok(error_answer(
                &service,
                500,
                code,
                "We encountered an internal error. Please try again.",
            ));
        }
        Some(Fault::DropBefore) => {
            state.count("connection dropped before the call");
            return Err("dropped by the fault proxy".into());
        }
        _ => {}
    }

    let uri = format!(
        "{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut forward = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in parts.headers.iter() {
        if k != "host" {
            forward = forward.header(k, v);
        }
    }
    let upstream_answer = client
        .request(forward.body(Full::new(body)).unwrap())
        .await?;
    let (mut head, body) = upstream_answer.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut body = String::from_utf8_lossy(&body).into_owned();
    if service == "ec2"
        && (op.starts_with("Create") || op.starts_with("Allocate"))
        && head.status.is_success()
    {
        let mut created = state.created.lock().unwrap();
        for (id, code) in ids_in(&body) {
            if !text.contains(&id) {
                created.insert(id, (Instant::now(), code));
            }
        }
    }
    if let Some(Fault::DropAfter) = fault {
        state.count("connection dropped after the call (response lost)");
        return Err("response lost by the fault proxy".into());
    }
    if faults.hold_pending > 0.0 && state.dice.roll() < faults.hold_pending {
        let held = hold(&op, body.clone());
        if held != body {
            state.count("held pending");
            body = held;
        }
    }
    if let Some(rewrite) = &state.config.rewrite {
        body = rewrite(&op, body);
    }
    head.headers.remove("content-length");
    head.headers.remove("transfer-encoding");
    Ok(Response::from_parts(head, Full::new(Bytes::from(body))))
}

async fn serve(upstream: String, config: Config) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let state = Arc::new(State {
        dice: Dice(AtomicU64::new(config.faults.seed)),
        config,
        created: Mutex::new(HashMap::new()),
        operations: Arc::new(Mutex::new(Vec::new())),
        refused: Arc::new(Mutex::new(Vec::new())),
        injected: Arc::new(Mutex::new(BTreeMap::new())),
    });
    let proxy = Proxy {
        url: format!("http://{addr}"),
        operations: state.operations.clone(),
        refused: state.refused.clone(),
        injected: state.injected.clone(),
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (client, upstream, state) = (client.clone(), upstream.clone(), state.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    answer(state.clone(), client.clone(), upstream.clone(), req)
                });
                // An Err from the service drops the connection: the client sees a reset.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    proxy
}
