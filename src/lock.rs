//! One run per stack at a time. apply and destroy hold a lock object in S3,
//! `s3://tsprov-locks-<account>/<stack>.json` in us-east-1, written with a
//! conditional PUT (`If-None-Match: *`): of two runs, S3 lets exactly one write it.
//! The object names the holder and since when; the holder renews it every tenth of
//! its lifetime, a minute by default (`If-Match` its own version, so a lock broken and
//! taken by another run is noticed), and deletes it when done. A lock not renewed for
//! [`TTL`], 10 minutes (its run crashed, its laptop slept), has expired: the next run
//! takes it over. `tsprov unlock` breaks one
//! at once. No state lives anywhere else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use crate::aws::{absent, api, error_code, Clients};

/// How long a lock lives without renewal; `TSPROV_LOCK_TTL` (seconds) changes it.
/// The holder renews it every tenth of that.
pub const TTL: Duration = Duration::from_secs(600);

fn ttl() -> Duration {
    std::env::var("TSPROV_LOCK_TTL")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(TTL, Duration::from_secs_f64)
}
/// The region of the lock bucket, whatever regions a run touches: one agreed place.
pub const REGION: &str = "us-east-1";

/// What the lock object says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub stack: String,
    /// Who runs it: the AWS identity, user, host and process.
    pub holder: String,
    pub command: String,
    pub since: String,
    pub expires: String,
}

impl Record {
    /// The same run's lock (renewals change only `expires`).
    fn is(&self, other: &Record) -> bool {
        self.holder == other.holder && self.since == other.since && self.command == other.command
    }
    fn expired(&self) -> bool {
        humantime::parse_rfc3339(&self.expires).map_or(true, |t| t < SystemTime::now())
    }
}

/// Another run holds the stack: exit code 3, so CI can wait and retry.
#[derive(Debug, thiserror::Error)]
#[error("stack {stack} is locked by {holder}, running `{command}` since {since}; the lock expires at {expires} unless that run renews it.\nIf that run is dead, break the lock: tsprov unlock {plan} --stack {stack}", stack = .record.stack, holder = .record.holder, command = .record.command, since = .record.since, expires = .record.expires, plan = .plan)]
pub struct Locked {
    pub record: Record,
    pub plan: String,
}

pub struct Held {
    /// Set once changes start: from then on Ctrl-C lets the calls in flight finish.
    changing: Arc<AtomicBool>,
    place: Place,
    etag: Arc<Mutex<String>>,
    renewer: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Place {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    identity: String,
}

async fn place(clients: &Clients, stack: &str) -> Result<Place> {
    let me = clients
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(api("GetCallerIdentity"))?;
    Ok(Place {
        s3: clients.s3.clone(),
        bucket: format!("tsprov-locks-{}", me.account().unwrap_or("unknown")),
        key: format!("{stack}.json"),
        identity: me.arn().unwrap_or("unknown").to_string(),
    })
}

fn now_plus(d: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + d).to_string()
}

fn holder(identity: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "?".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "?".into());
    format!(
        "{identity} ({user}@{}, pid {})",
        host.trim(),
        std::process::id()
    )
}

/// Writes the record if no lock exists (`if_match` None) or if the lock is still the
/// version `if_match`; `Ok(None)` when S3 refuses because that is not so.
async fn write(place: &Place, record: &Record, if_match: Option<&str>) -> Result<Option<String>> {
    let body = serde_json::to_vec_pretty(record)?;
    let mut call = place
        .s3
        .put_object()
        .bucket(&place.bucket)
        .key(&place.key)
        .content_type("application/json")
        .body(ByteStream::from(body));
    call = match if_match {
        Some(etag) => call.if_match(etag),
        None => call.if_none_match("*"),
    };
    match call.send().await.map_err(api("PutObject")) {
        Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
        Err(e)
            if matches!(
                error_code(&e),
                Some("PreconditionFailed" | "ConditionalRequestConflict" | "NoSuchKey")
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

async fn delete(place: &Place) -> Result<()> {
    place
        .s3
        .delete_object()
        .bucket(&place.bucket)
        .key(&place.key)
        .send()
        .await
        .map_err(api("DeleteObject"))?;
    Ok(())
}

/// The lock as it is now, with its version; `None` when there is none.
async fn read(place: &Place) -> Result<Option<(Record, String)>> {
    let answer = place
        .s3
        .get_object()
        .bucket(&place.bucket)
        .key(&place.key)
        .send()
        .await
        .map_err(api("GetObject"));
    let Some(out) = absent(answer, &["NoSuchKey", "NoSuchBucket"])? else {
        return Ok(None);
    };
    let etag = out.e_tag().unwrap_or_default().to_string();
    let bytes = out.body.collect().await?.into_bytes();
    let record = serde_json::from_slice(&bytes)
        .with_context(|| format!("s3://{}/{} is not a tsprov lock", place.bucket, place.key))?;
    Ok(Some((record, etag)))
}

/// The lock bucket, made on first use: private, encrypted by S3 by default.
async fn make_bucket(place: &Place) -> Result<()> {
    match place
        .s3
        .create_bucket()
        .bucket(&place.bucket)
        .send()
        .await
        .map_err(api("CreateBucket"))
    {
        Err(e) if error_code(&e) == Some("BucketAlreadyOwnedByYou") => {}
        other => {
            other?;
        }
    }
    let block = aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build();
    place
        .s3
        .put_public_access_block()
        .bucket(&place.bucket)
        .public_access_block_configuration(block)
        .send()
        .await
        .map_err(api("PutPublicAccessBlock"))?;
    Ok(())
}

/// Takes the stack's lock for `command`, waiting up to `wait` while another run holds
/// it, or fails with [`Locked`] naming the holder. `stop` is set if the lock is lost
/// while held (broken by someone else).
pub async fn take(
    clients: &Clients,
    stack: &str,
    command: &str,
    plan: &str,
    wait: Duration,
    stop: Arc<AtomicBool>,
) -> Result<Held> {
    let start = std::time::Instant::now();
    let mut last_holder = String::new();
    loop {
        match try_take(clients, stack, command, plan, stop.clone()).await {
            Err(e) if start.elapsed() < wait => {
                let Some(locked) = e.downcast_ref::<Locked>() else {
                    return Err(e);
                };
                if locked.record.holder != last_holder {
                    last_holder = locked.record.holder.clone();
                    eprintln!(
                        "lock: stack {stack} is held by {} (`{}` since {}); waiting up to {}",
                        locked.record.holder,
                        locked.record.command,
                        locked.record.since,
                        humantime::format_duration(wait)
                    );
                }
                let left = wait.saturating_sub(start.elapsed());
                tokio::time::sleep(left.min(Duration::from_secs(2))).await;
            }
            other => return other,
        }
    }
}

async fn try_take(
    clients: &Clients,
    stack: &str,
    command: &str,
    plan: &str,
    stop: Arc<AtomicBool>,
) -> Result<Held> {
    let place = place(clients, stack).await?;
    let record = Record {
        stack: stack.to_string(),
        holder: holder(&place.identity),
        command: command.to_string(),
        since: now_plus(Duration::ZERO),
        expires: now_plus(ttl()),
    };
    let mut bucket_made = false;
    let etag = loop {
        let attempt = write(&place, &record, None).await;
        match attempt {
            Ok(Some(etag)) => break etag,
            Err(e) if error_code(&e) == Some("NoSuchBucket") && !bucket_made => {
                make_bucket(&place).await?;
                bucket_made = true;
            }
            Err(e) => return Err(e.context("taking the stack lock")),
            Ok(None) => match read(&place).await? {
                // Released between our write and our read: try again.
                None => continue,
                // Ours: our write went through but its answer was lost, and the retry was refused.
                Some((found, etag)) if found.is(&record) => break etag,
                Some((old, old_etag)) if old.expired() => {
                    if let Some(etag) = write(&place, &record, Some(&old_etag)).await? {
                        eprintln!(
                            "lock: took over the expired lock of {} (`{}` since {}, expired {})",
                            old.holder, old.command, old.since, old.expires
                        );
                        break etag;
                    }
                }
                Some((held, _)) => {
                    return Err(Locked {
                        record: held,
                        plan: plan.to_string(),
                    }
                    .into())
                }
            },
        }
    };
    let etag = Arc::new(Mutex::new(etag));
    let renewer = tokio::spawn(renew(place.clone(), record, etag.clone(), stop));
    let changing = Arc::new(AtomicBool::new(false));
    tokio::spawn(release_on_interrupt(
        place.clone(),
        etag.clone(),
        changing.clone(),
    ));
    Ok(Held {
        place,
        etag,
        renewer,
        changing,
    })
}

/// Ctrl-C before any change (while reading, or at the confirmation prompt) quits at
/// once and frees the stack; once changes run, apply's own handler lets them finish.
async fn release_on_interrupt(place: Place, etag: Arc<Mutex<String>>, changing: Arc<AtomicBool>) {
    while tokio::signal::ctrl_c().await.is_ok() {
        if changing.load(Ordering::Relaxed) {
            continue;
        }
        eprintln!("interrupt: nothing was changed; releasing the stack lock");
        let etag = etag.lock().unwrap().clone();
        release_if_ours(&place, &etag).await;
        std::process::exit(130);
    }
}

async fn release_if_ours(place: &Place, etag: &str) {
    let ours = place
        .s3
        .head_object()
        .bucket(&place.bucket)
        .key(&place.key)
        .if_match(etag)
        .send()
        .await
        .is_ok();
    if !ours {
        return;
    }
    if let Err(e) = delete(place).await {
        eprintln!(
            "lock: could not release s3://{}/{} ({e:#}); it expires by itself",
            place.bucket, place.key
        );
    }
}

/// Keeps the lock alive; if it was broken and taken by another run, stops this one.
async fn renew(place: Place, mut record: Record, etag: Arc<Mutex<String>>, stop: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(ttl() / 10).await;
        record.expires = now_plus(ttl());
        let current = etag.lock().unwrap().clone();
        match write(&place, &record, Some(&current)).await {
            Ok(Some(next)) => *etag.lock().unwrap() = next,
            Ok(None) => match read(&place).await {
                // Our renewal went through but its answer was lost: carry on with its version.
                Ok(Some((found, next))) if found.is(&record) => *etag.lock().unwrap() = next,
                Err(e) => eprintln!("lock: checking the lock failed ({e:#}); trying again soon"),
                Ok(_) => {
                    eprintln!("lock: LOST: the stack lock was broken and taken by another run; no new step starts");
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            },
            // A failed renewal is tried again; the lock lives on until it expires.
            Err(e) => eprintln!("lock: renewing failed ({e:#}); trying again soon"),
        }
    }
}

impl Held {
    pub fn changes_start(&self) {
        self.changing.store(true, Ordering::Relaxed);
    }

    /// Deletes the lock if it is still ours. (S3's conditional DeleteObject is not
    /// everywhere yet: a HEAD with If-Match checks it is our version first.)
    pub async fn release(self) {
        self.renewer.abort();
        let etag = self.etag.lock().unwrap().clone();
        release_if_ours(&self.place, &etag).await;
    }
}

/// Breaks the stack's lock, whoever holds it; returns what it said.
pub async fn break_lock(clients: &Clients, stack: &str) -> Result<Option<Record>> {
    let place = place(clients, stack).await?;
    let Some((record, _)) = read(&place).await? else {
        return Ok(None);
    };
    delete(&place).await?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, since: &str, expires: &str) -> Record {
        Record {
            stack: "s".into(),
            holder: holder.into(),
            command: "apply".into(),
            since: since.into(),
            expires: expires.into(),
        }
    }

    #[test]
    fn expiry_and_ownership() {
        assert!(record("a", "2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z").expired());
        assert!(!record("a", "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z").expired());
        // Unreadable: treated as expired, so a mangled lock never blocks for ever.
        assert!(record("a", "x", "not a time").expired());
        let mine = record(
            "a (u@h, pid 1)",
            "2026-12-04T00:00:00Z",
            "2026-12-04T00:10:00Z",
        );
        let renewed = record(
            "a (u@h, pid 1)",
            "2026-12-04T00:00:00Z",
            "2026-12-04T00:11:00Z",
        );
        let other = record(
            "a (u@h, pid 2)",
            "2026-12-04T00:00:00Z",
            "2026-12-04T00:10:00Z",
        );
        assert!(mine.is(&renewed));
        assert!(!mine.is(&other));
    }
}
