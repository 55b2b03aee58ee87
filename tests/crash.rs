//! Crash safety: tsprov killed with SIGKILL at random moments, 20 times, alternately
//! during apply and destroy of the whole platform in three regions. Each killed run
//! leaves its lock behind (as a crashed run does); the operator breaks it with
//! `tsprov unlock`. The next full run converges: every resource exactly once, a plan
//! with no changes, and destroy leaves nothing.
//!
//! `TSPROV_CRASH_TRIALS` sets the number of trials (default 20), `TSPROV_CRASH_SEED` the seed.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::proxy::{self, Faults};
use common::*;

/// Starts tsprov and kills it with SIGKILL after `delay`; the exit code and output of
/// a run that ended before.
fn run_and_kill(url: &str, args: &[&str], delay: Duration) -> Option<(i32, String)> {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = tsprov_command()
        .args(args)
        .args(["--endpoint-url", url])
        .env("TSPROV_DEPENDENCY_TIMEOUT", "30")
        .stdout(Stdio::from(log.reopen().unwrap()))
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < delay {
        if let Some(status) = child.try_wait().unwrap() {
            let output = std::fs::read_to_string(log.path()).unwrap();
            return Some((status.code().unwrap_or(-1), output));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no handler runs, no lock is released.
    child.wait().unwrap();
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_random_moments_the_next_run_converges_without_duplicates_or_leaks() {
    require_localstack();
    let stack = unique_stack("crash");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("plans/taskstream.toml")
        .unwrap()
        .replace("protect_data = true", "protect_data = false");
    let plan = write_plan(&dir, "platform.toml", &text);
    let trials: usize = std::env::var("TSPROV_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut seed: u64 = std::env::var("TSPROV_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash seed {seed}");
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f64 / 10_000.0
    };
    // 50 ms per call stretches an apply to a few seconds: kills land inside it.
    let slow = proxy::start_faulty(
        endpoint(),
        Faults {
            latency: Duration::from_millis(50),
            ..Faults::default()
        },
    )
    .await;
    let want = planned_addresses(&tsprov("plan", &plan, &stack, &["--json"]).ok().json());

    let mut destroy_args = vec![
        "destroy",
        plan.as_str(),
        "--stack",
        stack.as_str(),
        "--auto-approve",
    ];
    destroy_args.extend_from_slice(ALLOW_DATA_LOSS);
    let apply_args = [
        "apply",
        plan.as_str(),
        "--stack",
        stack.as_str(),
        "--auto-approve",
    ];
    let mut killed = 0;
    // Runs until `trials` runs were killed mid-way (a run may end before its kill).
    let mut trial = 0;
    while killed < trials {
        assert!(
            trial < 3 * trials,
            "only {killed} of {trial} runs were killed mid-way"
        );
        // Destroys of a half-built stack are short: kill them sooner.
        let (what, args, longest): (&str, &[&str], f64) = if trial % 2 == 0 {
            ("apply", &apply_args, 3.0)
        } else {
            ("destroy", &destroy_args, 1.5)
        };
        let delay = Duration::from_secs_f64(0.2 + longest * random());
        let ended = tokio::task::spawn_blocking({
            let (url, args) = (
                slow.url.clone(),
                args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            );
            move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run_and_kill(&url, &args, delay)
            }
        })
        .await
        .unwrap();
        match ended {
            None => {
                killed += 1;
                eprintln!(
                    "trial {trial}: {what} killed after {:.2}s",
                    delay.as_secs_f64()
                );
            }
            // A run that was not killed must have done its job, crashes before it or not.
            Some((code, output)) => {
                assert_eq!(
                    code, 0,
                    "trial {trial}: {what} after a crash failed:\n{output}"
                );
                eprintln!("trial {trial}: {what} ended before the kill");
            }
        }
        // The killed run's lock stays; the operator, knowing it is dead, breaks it.
        tsprov("unlock", &plan, &stack, &[]).ok();
        trial += 1;
    }

    let apply = tsprov("apply", &plan, &stack, &["--auto-approve"]);
    assert_eq!(
        apply.code, 0,
        "the run after the crashes:\n{}\n{}",
        apply.stdout, apply.stderr
    );
    for (region, addresses) in &want {
        assert_eq!(
            &tagged_addresses(region, &stack).await,
            addresses,
            "{region}: every resource exactly once"
        );
    }
    let check = tsprov("plan", &plan, &stack, &["--detailed-exitcode"]);
    assert_eq!(
        check.code, 0,
        "changes after convergence:\n{}",
        check.stdout
    );

    let mut args = vec!["--auto-approve"];
    args.extend_from_slice(ALLOW_DATA_LOSS);
    tsprov("destroy", &plan, &stack, &args).ok();
    assert_nothing_left(&stack).await;
}
