//! One run per stack at a time: apply and destroy hold a lock object in S3; a second
//! run is refused (exit 3) with the holder and since when; a crashed run's lock can be
//! broken with `tsprov unlock` and expires by itself.

mod common;

use std::time::Duration;

use common::proxy::{self, Faults};
use common::*;

const LOCK_BUCKET: &str = "tsprov-locks-000000000000";

const SMALL: &str = r#"
[stack]
name = "small"

[regions.eu-west-1]
azs = ["eu-west-1a", "eu-west-1b"]

[vpc.main]
cidr_block = "10.41.0.0/16"
soc2_exceptions = { flow-logs = "short-lived test VPC with no traffic" }

[subnet.app]
per_az = true
vpc = "vpc.main"
cidr_block = { within = "vpc.main", newbits = 8, netnum = 0 }

[internet_gateway.main]
vpc = "vpc.main"
"#;

async fn lock_object(stack: &str) -> Option<serde_json::Value> {
    let s3 = s3("us-east-1").await;
    let out = s3
        .get_object()
        .bucket(LOCK_BUCKET)
        .key(format!("{stack}.json"))
        .send()
        .await
        .ok()?;
    let bytes = out.body.collect().await.unwrap().into_bytes();
    Some(serde_json::from_slice(&bytes).unwrap())
}

async fn plant_lock(stack: &str, holder: &str, expires: &str) {
    let s3 = s3("us-east-1").await;
    let _ = s3.create_bucket().bucket(LOCK_BUCKET).send().await;
    let record = serde_json::json!({
        "stack": stack,
        "holder": holder,
        "command": "apply",
        "since": "2026-12-04T08:00:00Z",
        "expires": expires,
    });
    s3.put_object()
        .bucket(LOCK_BUCKET)
        .key(format!("{stack}.json"))
        .body(serde_json::to_vec(&record).unwrap().into())
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_is_refused_while_the_first_holds_the_stack() {
    require_localstack();
    let stack = unique_stack("lock");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(&dir, "small.toml", SMALL);
    // Every call 300 ms late: the first apply holds the lock for seconds.
    let slow = proxy::start_faulty(
        endpoint(),
        Faults {
            latency: Duration::from_millis(300),
            ..Faults::default()
        },
    )
    .await;
    let first = tokio::task::spawn_blocking({
        let (url, plan, stack) = (slow.url.clone(), plan.clone(), stack.clone());
        move || tsprov_via(&url, "apply", &plan, &stack, &["--auto-approve"], &[])
    });
    let mut held = None;
    for _ in 0..100 {
        held = lock_object(&stack).await;
        if held.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = held.expect("the first apply takes the lock");
    assert_eq!(held["command"], "apply");
    assert!(held["holder"].as_str().unwrap().contains("pid "), "{held}");

    let second = tsprov("apply", &plan, &stack, &["--auto-approve"]);
    assert_eq!(second.code, 3, "{}\n{}", second.stdout, second.stderr);
    for expected in [
        format!("stack {stack} is locked by"),
        "running `apply` since".to_string(),
        held["since"].as_str().unwrap().to_string(),
        format!("tsprov unlock {plan} --stack {stack}"),
    ] {
        assert!(
            second.stderr.contains(&expected),
            "missing {expected:?}:\n{}",
            second.stderr
        );
    }
    let destroy = tsprov("destroy", &plan, &stack, &["--auto-approve"]);
    assert_eq!(
        destroy.code, 3,
        "destroy waits its turn too:\n{}",
        destroy.stderr
    );
    // Reading needs no lock.
    tsprov("plan", &plan, &stack, &[]).ok();

    first.await.unwrap().ok();
    assert!(lock_object(&stack).await.is_none(), "released when done");
    tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(lock_object(&stack).await.is_none());
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_runs_started_together_exactly_one_applies() {
    require_localstack();
    let stack = unique_stack("race");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(&dir, "small.toml", SMALL);
    let slow = proxy::start_faulty(
        endpoint(),
        Faults {
            latency: Duration::from_millis(200),
            ..Faults::default()
        },
    )
    .await;
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (url, plan, stack) = (slow.url.clone(), plan.clone(), stack.clone());
            tokio::task::spawn_blocking(move || {
                tsprov_via(&url, "apply", &plan, &stack, &["--auto-approve"], &[])
            })
        })
        .collect();
    let mut codes = Vec::new();
    for r in runs {
        codes.push(r.await.unwrap().code);
    }
    codes.sort();
    assert_eq!(codes, vec![0, 3]);
    assert_eq!(
        tagged_addresses("eu-west-1", &stack).await,
        vec![
            "internet_gateway.main",
            "subnet.app[0]",
            "subnet.app[1]",
            "vpc.main"
        ]
    );
    tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_runs_lock_is_broken_explicitly_or_expires() {
    require_localstack();
    let stack = unique_stack("stale");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(&dir, "small.toml", SMALL);

    // A run that died an hour ago, its lock still valid for a while.
    plant_lock(
        &stack,
        "arn:aws:iam::000000000000:user/ghost (ghost@ci-7, pid 4242)",
        "2099-01-01T00:00:00Z",
    )
    .await;
    let refused = tsprov("apply", &plan, &stack, &["--auto-approve"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("ghost@ci-7, pid 4242"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("2026-12-04T08:00:00Z"),
        "{}",
        refused.stderr
    );
    assert!(
        leftovers("eu-west-1", &stack).await.is_empty(),
        "a refused run changes nothing"
    );

    let unlock = tsprov("unlock", &plan, &stack, &[]).ok();
    assert!(unlock.stdout.contains("ghost@ci-7"), "{}", unlock.stdout);
    assert!(lock_object(&stack).await.is_none());
    tsprov("apply", &plan, &stack, &["--auto-approve"]).ok();

    // A lock past its expiry is taken over, and says so.
    plant_lock(
        &stack,
        "arn:aws:iam::000000000000:user/ghost (ghost@ci-8, pid 77)",
        "2026-01-01T00:00:00Z",
    )
    .await;
    let destroy = tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(
        destroy.stderr.contains("took over the expired lock of arn:aws:iam::000000000000:user/ghost (ghost@ci-8, pid 77)"),
        "{}",
        destroy.stderr
    );
    assert!(lock_object(&stack).await.is_none());
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
    let unlock = tsprov("unlock", &plan, &stack, &[]).ok();
    assert!(
        unlock.stdout.contains("was not locked"),
        "{}",
        unlock.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_holder_renews_its_lock_and_stops_when_the_lock_is_taken_from_it() {
    require_localstack();
    let stack = unique_stack("renew");
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{SMALL}\n[route_table.public]\nvpc = \"vpc.main\"\nsubnets = [\"subnet.app\"]\nroutes = [{{ destination = \"0.0.0.0/0\", gateway = \"internet_gateway.main\" }}]\n");
    let plan = write_plan(&dir, "small.toml", &text);
    // A second per call: the apply takes over ten.
    let slow = proxy::start_faulty(
        endpoint(),
        Faults {
            latency: Duration::from_millis(1000),
            ..Faults::default()
        },
    )
    .await;
    // A 3 s lock, renewed every 0.3 s, on a run that takes longer than that.
    let env = [("TSPROV_LOCK_TTL", "3")];
    let first = tokio::task::spawn_blocking({
        let (url, plan, stack) = (slow.url.clone(), plan.clone(), stack.clone());
        move || tsprov_via(&url, "apply", &plan, &stack, &["--auto-approve"], &env)
    });
    let mut since = None;
    for _ in 0..100 {
        if let Some(lock) = lock_object(&stack).await {
            since = Some(lock["since"].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let since = since.expect("the first apply takes the lock");
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Past its first expiry, the lock still holds: renewed.
    let lock = lock_object(&stack).await.expect("still held");
    assert_eq!(lock["since"], since);
    let second = tsprov("apply", &plan, &stack, &["--auto-approve"]);
    assert_eq!(second.code, 3, "{}", second.stderr);

    // Someone breaks it and another run takes it: the first run notices and stops.
    tsprov("unlock", &plan, &stack, &[]).ok();
    plant_lock(
        &stack,
        "arn:aws:iam::000000000000:user/other (other@ci, pid 1)",
        "2099-01-01T00:00:00Z",
    )
    .await;
    let first = first.await.unwrap();
    assert_eq!(first.code, 1, "{}\n{}", first.stdout, first.stderr);
    assert!(first.stderr.contains("lock: LOST"), "{}", first.stderr);
    assert!(
        first.stdout.contains("not started: interrupted"),
        "{}",
        first.stdout
    );
    assert_eq!(
        lock_object(&stack).await.unwrap()["holder"],
        "arn:aws:iam::000000000000:user/other (other@ci, pid 1)",
        "the other run's lock is left alone"
    );

    tsprov("unlock", &plan, &stack, &[]).ok();
    tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_at_the_prompt_changes_nothing_and_frees_the_stack() {
    require_localstack();
    let stack = unique_stack("prompt");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(&dir, "small.toml", SMALL);
    let mut child = tsprov_command()
        .args([
            "apply",
            &plan,
            "--stack",
            &stack,
            "--endpoint-url",
            &endpoint(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open: `wait` would close it, and end of input answers "no".
    let stdin = child.stdin.take().unwrap();
    // Wait for the question (stderr), then answer it with Ctrl-C.
    let mut stderr = child.stderr.take().unwrap();
    let question = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while stderr.read(&mut byte).unwrap_or(0) == 1 {
            seen.push(byte[0]);
            if String::from_utf8_lossy(&seen).contains("Only 'yes' is accepted") {
                break;
            }
        }
        (stderr, String::from_utf8_lossy(&seen).into_owned())
    });
    let (mut stderr, asked) = tokio::time::timeout(Duration::from_secs(30), question)
        .await
        .expect("the prompt within 30 s")
        .unwrap();
    assert!(
        lock_object(&stack).await.is_some(),
        "held while asking: {asked}"
    );
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains("nothing was changed; releasing the stack lock"),
        "{rest}"
    );
    assert!(
        lock_object(&stack).await.is_none(),
        "the stack is free again"
    );
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_lock_timeout_a_run_waits_for_the_holder() {
    require_localstack();
    let stack = unique_stack("wait");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(&dir, "small.toml", SMALL);
    plant_lock(
        &stack,
        "arn:aws:iam::000000000000:user/slow (slow@ci, pid 9)",
        "2099-01-01T00:00:00Z",
    )
    .await;

    // Still held when the wait is over: refused as without it, after the wait.
    let started = std::time::Instant::now();
    let refused = tsprov(
        "apply",
        &plan,
        &stack,
        &["--auto-approve", "--lock-timeout", "2s"],
    );
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(refused.stderr.contains("is held by arn:aws:iam::000000000000:user/slow (slow@ci, pid 9) (`apply` since 2026-12-04T08:00:00Z); waiting up to 2s"), "{}", refused.stderr);

    // Freed while it waits: the run goes on.
    let waiting = tokio::task::spawn_blocking({
        let (plan, stack) = (plan.clone(), stack.clone());
        move || {
            tsprov(
                "apply",
                &plan,
                &stack,
                &["--auto-approve", "--lock-timeout", "1m"],
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tsprov("unlock", &plan, &stack, &[]).ok();
    let applied = waiting.await.unwrap().ok();
    assert!(
        applied.stdout.contains("apply complete"),
        "{}",
        applied.stdout
    );
    tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
    assert!(lock_object(&stack).await.is_none());
}
