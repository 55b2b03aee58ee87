//! Convergence under the faults real AWS shows: with a fifth of all calls throttled,
//! answered 500 or cut off (half of those after the call was served, so its answer
//! is lost), resources reported `NotFound` right after their create and waiters held
//! pending, the whole platform in three regions is applied with every resource
//! exactly once, plans no changes, and destroys to nothing. Quota errors fail fast.
//!
//! CI runs one seed; `scripts/fault-soak.sh` runs many.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{self, Faults};
use common::*;

fn seed() -> u64 {
    std::env::var("TSPROV_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261204)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_platform_converges_under_a_fifth_of_calls_faulted() {
    require_localstack();
    let stack = unique_stack("faults");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("plans/taskstream.toml")
        .unwrap()
        .replace("protect_data = true", "protect_data = false");
    let plan = write_plan(&dir, "platform.toml", &text);
    let seed = seed();
    let faulty = proxy::start_faulty(
        endpoint(),
        Faults {
            rate: 0.2,
            not_found_after_create: 0.3,
            hold_pending: 0.3,
            seed,
            ..Faults::default()
        },
    )
    .await;
    let via = |command: &'static str, extra: Vec<&'static str>| {
        let (url, plan, stack) = (faulty.url.clone(), plan.clone(), stack.clone());
        tokio::task::spawn_blocking(move || tsprov_via(&url, command, &plan, &stack, &extra, &[]))
    };

    let first = via("plan", vec!["--json"]).await.unwrap().ok();
    let want = planned_addresses(&first.json());
    assert_eq!(want.len(), 3);

    let started = Instant::now();
    let apply = via("apply", vec!["--auto-approve"]).await.unwrap();
    let took = started.elapsed();
    eprintln!(
        "seed {seed}: apply under faults: exit {} in {:.1}s, {} calls, injected {:?}",
        apply.code,
        took.as_secs_f64(),
        faulty.calls(),
        faulty.injected.lock().unwrap()
    );
    // One run converges: every fault is either retried by the SDK or the executor
    // looks for the resource and adopts it (so no run has to be repeated).
    assert_eq!(
        apply.code, 0,
        "apply under faults:\n{}\n{}",
        apply.stdout, apply.stderr
    );
    assert!(
        faulty.injected_total() > 50,
        "{:?}",
        faulty.injected.lock().unwrap()
    );

    for (region, addresses) in &want {
        let live = tagged_addresses(region, &stack).await;
        assert_eq!(&live, addresses, "{region}: every resource exactly once");
    }
    let check = via("plan", vec!["--detailed-exitcode"]).await.unwrap();
    assert_eq!(
        check.code, 0,
        "a plan after the faulty apply shows changes:\n{}\n{}",
        check.stdout, check.stderr
    );

    let mut args = vec!["--auto-approve"];
    args.extend_from_slice(ALLOW_DATA_LOSS);
    let destroy = via("destroy", args).await.unwrap();
    assert_eq!(
        destroy.code, 0,
        "destroy under faults:\n{}\n{}",
        destroy.stdout, destroy.stderr
    );
    assert_nothing_left(&stack).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_errors_fail_fast_and_say_what_to_do() {
    require_localstack();
    let stack = unique_stack("quota");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        &dir,
        "quota.toml",
        r#"
[stack]
name = "quota"

[regions.eu-west-1]
azs = ["eu-west-1a"]

[kms_key.main]
description = "quota test"
enable_key_rotation = true

[vpc.main]
cidr_block = "10.40.0.0/16"
soc2_exceptions = { flow-logs = "short-lived test VPC with no traffic" }

[log_group.app]
retention_days = 365
kms_key = "kms_key.main"
"#,
    );
    let quota = proxy::start_faulty(
        endpoint(),
        Faults {
            // EC2's own quota code, and the code KMS and CloudWatch Logs use for quotas,
            // which the SDK would otherwise retry as throttling.
            quota: vec![
                ("CreateVpc", "VpcLimitExceeded"),
                ("CreateAlias", "LimitExceededException"),
            ],
            ..Faults::default()
        },
    )
    .await;
    let started = Instant::now();
    let run = tokio::task::spawn_blocking({
        let (url, plan, stack) = (quota.url.clone(), plan.clone(), stack.clone());
        move || tsprov_via(&url, "apply", &plan, &stack, &["--auto-approve"], &[])
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        took < Duration::from_secs(15),
        "took {took:?}: quota errors were retried"
    );
    let out = format!("{}{}", run.stdout, run.stderr);
    for expected in [
        "vpc.main",
        "VpcLimitExceeded",
        "kms_key.main",
        "LimitExceededException",
        "an AWS service quota is reached",
        "raise the quota",
        "log_group.app",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let ops = quota.operations.lock().unwrap().clone();
    for op in ["CreateVpc", "CreateAlias"] {
        assert_eq!(
            ops.iter().filter(|o| *o == op).count(),
            1,
            "{op} was retried: {ops:?}"
        );
    }
    // The key was made before its alias failed: destroy finds it by its tags.
    tsprov(
        "destroy",
        &plan,
        &stack,
        &["--auto-approve", "--allow-destroy", "kms_key.main"],
    )
    .ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
    assert!(tagged_addresses("eu-west-1", &stack).await.is_empty());
}
