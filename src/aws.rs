//! AWS clients per region, the API-call counter, error classification and the
//! retry/wait helpers every kind uses.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::region::Region;

/// Counts every HTTP attempt, per `service:Operation`.
#[derive(Debug, Default)]
pub struct CallCounter {
    total: AtomicU64,
    by_operation: Mutex<BTreeMap<String, u64>>,
}

impl CallCounter {
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
    pub fn by_operation(&self) -> BTreeMap<String, u64> {
        self.by_operation.lock().unwrap().clone()
    }
}

#[derive(Debug)]
struct CountCalls(Arc<CallCounter>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "tsprov::CountCalls"
    }
    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.total.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = cfg.load::<Metadata>() {
            *self
                .0
                .by_operation
                .lock()
                .unwrap()
                .entry(format!("{}:{}", m.service(), m.name()))
                .or_default() += 1;
        }
        Ok(())
    }
}

/// Quota errors are final. The SDK counts `LimitExceededException` as throttling and
/// retries it for a minute, but KMS, CloudWatch Logs and EKS use it for "you have
/// too many": waiting does not help, the operator must act.
#[derive(Debug)]
struct QuotaIsFinal;

impl ClassifyRetry for QuotaIsFinal {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(response) = ctx.response() else {
            return RetryAction::NoActionIndicated;
        };
        let header = response
            .headers()
            .get("x-amzn-errortype")
            .unwrap_or_default();
        let body = response.body().bytes().unwrap_or_default();
        let body = String::from_utf8_lossy(&body[..body.len().min(4096)]);
        if response.status().is_client_error()
            && (header.starts_with("LimitExceededException")
                || body.contains("LimitExceededException"))
        {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }
    fn name(&self) -> &'static str {
        "tsprov::QuotaIsFinal"
    }
    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// The clients of one region.
#[derive(Clone, Debug)]
pub struct Clients {
    pub region: String,
    pub ec2: aws_sdk_ec2::Client,
    pub kms: aws_sdk_kms::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub s3: aws_sdk_s3::Client,
    pub eks: aws_sdk_eks::Client,
    pub rds: aws_sdk_rds::Client,
    pub elasticache: aws_sdk_elasticache::Client,
    pub sts: aws_sdk_sts::Client,
}

pub async fn clients(region: &str, endpoint: Option<&str>, counter: Arc<CallCounter>) -> Clients {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        // Standard mode retries throttling and 5xx with backoff; quota errors are not retried.
        .retry_config(RetryConfig::standard().with_max_attempts(8));
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    // Every client counts its calls; S3 uses path-style addressing against a custom endpoint.
    macro_rules! client {
        ($krate:ident) => {{
            let conf = $krate::config::Builder::from(&sdk)
                .interceptor(CountCalls(counter.clone()))
                .retry_classifier(QuotaIsFinal)
                .build();
            $krate::Client::from_conf(conf)
        }};
    }
    let s3_conf = aws_sdk_s3::config::Builder::from(&sdk)
        .interceptor(CountCalls(counter.clone()))
        .retry_classifier(QuotaIsFinal)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    Clients {
        region: region.to_string(),
        ec2: client!(aws_sdk_ec2),
        kms: client!(aws_sdk_kms),
        iam: client!(aws_sdk_iam),
        logs: client!(aws_sdk_cloudwatchlogs),
        s3: aws_sdk_s3::Client::from_conf(s3_conf),
        eks: client!(aws_sdk_eks),
        rds: client!(aws_sdk_rds),
        elasticache: client!(aws_sdk_elasticache),
        sts: client!(aws_sdk_sts),
    }
}

/// An AWS call that failed, with the service's error code when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed: {detail}")]
pub struct ApiError {
    pub operation: &'static str,
    pub code: Option<String>,
    pub detail: String,
    /// Throttling, a 5xx, a timeout or a dropped connection: trying again may work, and
    /// a create may have happened although it failed.
    pub transient: bool,
}

/// Error codes of throttling and of AWS's own trouble (as the SDK's standard retry knows them).
const TRANSIENT_CODES: [&str; 16] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
];

/// `map_err(api("CreateVpc"))`: keeps the error code for classification and the whole chain for people.
pub fn api<E>(operation: &'static str) -> impl FnOnce(SdkError<E, HttpResponse>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| {
        let code = e.code().map(str::to_string);
        let transient = match &e {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(s) => {
                s.raw().status().is_server_error()
                    || code
                        .as_deref()
                        .is_some_and(|c| TRANSIENT_CODES.contains(&c))
            }
            _ => false,
        };
        let detail = match (&code, e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            _ => DisplayErrorContext(&e).to_string(),
        };
        ApiError {
            operation,
            code,
            detail,
            transient,
        }
        .into()
    }
}

pub fn error_code(e: &anyhow::Error) -> Option<&str> {
    api_error(e).and_then(|a| a.code.as_deref())
}

fn api_error(e: &anyhow::Error) -> Option<&ApiError> {
    e.chain().find_map(|c| c.downcast_ref::<ApiError>())
}

/// `Ok(None)` for an answer that means "there is none" (S3 answers with an error code
/// for a missing object or configuration).
pub fn absent<T>(r: anyhow::Result<T>, codes: &[&str]) -> anyhow::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if error_code(&e).is_some_and(|c| codes.contains(&c)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether an AWS call failed (rather than a waiter or a check of tsprov's own).
pub fn is_api_error(e: &anyhow::Error) -> bool {
    api_error(e).is_some()
}

/// Whether trying again may work (throttling, 5xx, timeouts, dropped connections).
pub fn is_transient(e: &anyhow::Error) -> bool {
    api_error(e).is_some_and(|a| a.transient)
}

/// A service quota reached (`VpcLimitExceeded`, `LimitExceededException`, ...): not
/// throttling, so waiting does not help.
pub fn is_quota(e: &anyhow::Error) -> bool {
    error_code(e).is_some_and(|c| {
        (c.contains("LimitExceeded") || c.contains("QuotaExceeded") || c == "TooManyBuckets")
            && !TRANSIENT_CODES.contains(&c)
    })
}

/// Config for a create AWS cannot make idempotent (no client token): one attempt. The
/// SDK would retry a create whose answer was lost and so make a second resource; the
/// executor looks for the first by its tags before it tries again.
pub fn ec2_once() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default().retry_config(RetryConfig::disabled())
}

/// [`ec2_once`] for KMS keys.
pub fn kms_once() -> aws_sdk_kms::config::Builder {
    aws_sdk_kms::config::Builder::default().retry_config(RetryConfig::disabled())
}

/// `InvalidVpcID.NotFound` and friends: what EC2 answers for a while after a create.
pub fn is_not_found(e: &anyhow::Error) -> bool {
    error_code(e).is_some_and(|c| {
        c.ends_with(".NotFound") || c.ends_with("NotFoundException") || c == "NatGatewayNotFound"
    })
}

/// Retries an operation on a resource created moments ago while AWS still says it does not exist.
pub async fn eventually<T, F, Fut>(mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut delay = Duration::from_millis(250);
    for _ in 0..7 {
        match op().await {
            Err(e) if is_not_found(&e) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
            other => return other,
        }
    }
    op().await
}

/// Retries a delete that AWS refuses with `DependencyViolation` (something still uses the
/// resource, often an ENI being released) until `timeout`; then returns the last error.
pub async fn while_dependency_violation<F, Fut>(timeout: Duration, mut op: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        match op().await {
            Err(e)
                if error_code(&e) == Some("DependencyViolation") && start.elapsed() < timeout =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            other => return other,
        }
    }
}

pub enum Poll {
    Done,
    Pending(String),
}

/// Waits for an asynchronous AWS state change (NAT gateway available, deleted, ...),
/// reporting progress every 15 s and failing after `timeout`.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    progress: &crate::report::Progress,
    mut poll: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Poll>>,
{
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match poll().await? {
            Poll::Done => return Ok(()),
            Poll::Pending(state) => {
                if progress.stopped() {
                    anyhow::bail!("interrupted while waiting for {what} (still {state}; it goes on in AWS and the next run picks it up)");
                }
                let waited = start.elapsed();
                if waited >= timeout {
                    anyhow::bail!(
                        "timed out after {}s waiting for {what} (still {state})",
                        waited.as_secs()
                    );
                }
                if last_report.elapsed() >= progress.interval() {
                    progress.line(&format!(
                        "still waiting for {what}: {state} after {}s (timeout {}s)",
                        waited.as_secs(),
                        timeout.as_secs()
                    ));
                    last_report = Instant::now();
                }
                tokio::time::sleep(delay.min(timeout.saturating_sub(waited))).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: Option<&str>, transient: bool) -> anyhow::Error {
        anyhow::Error::new(ApiError {
            operation: "CreateVpc",
            code: code.map(str::to_string),
            detail: "x".into(),
            transient,
        })
        .context("vpc.main")
    }

    #[test]
    fn quotas_are_not_throttling() {
        for code in [
            "VpcLimitExceeded",
            "AddressLimitExceeded",
            "LimitExceededException",
            "LimitExceeded",
            "ResourceLimitExceededException",
            "TooManyBuckets",
            "ServiceQuotaExceededException",
        ] {
            assert!(is_quota(&failed(Some(code), false)), "{code}");
        }
        for code in [
            "RequestLimitExceeded",
            "Throttling",
            "SlowDown",
            "BandwidthLimitExceeded",
        ] {
            assert!(!is_quota(&failed(Some(code), true)), "{code}");
        }
    }

    #[test]
    fn classification_reads_through_context() {
        let e = failed(Some("InvalidVpcID.NotFound"), false);
        assert!(is_api_error(&e) && is_not_found(&e) && !is_transient(&e));
        assert!(is_transient(&failed(None, true)));
        assert!(is_not_found(&failed(Some("NatGatewayNotFound"), false)));
        let waiter = anyhow::anyhow!("timed out after 600s waiting for nat_gateway.main");
        assert!(!is_api_error(&waiter) && !is_transient(&waiter));
    }
}
