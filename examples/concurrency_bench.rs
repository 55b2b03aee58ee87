//! Concurrency that shows: the reference platform applied through the test proxy
//! with 200 ms added to every AWS call, once for one region and once for all three.
//! Prints the apply wall times (three regions should take about as long as one) and,
//! per region, the sum of the step times against the critical path of the plan's
//! dependency graph weighted by the measured step times (the wall time should follow
//! the critical path, not the sum).
//!
//! Run: scripts/concurrency-bench.sh (builds tsprov, starts LocalStack).

#[path = "../tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

const TSPROV: &str = "target/debug/tsprov";
const ALLOW: [&str; 8] = [
    "--allow-destroy",
    "kms_key.main",
    "--allow-destroy",
    "rds_cluster.main",
    "--allow-destroy",
    "s3_bucket.data_lake",
    "--allow-destroy",
    "s3_bucket.artifacts",
];

fn tsprov(url: &str, args: &[&str]) -> (f64, String) {
    let start = Instant::now();
    let mut command = Command::new(TSPROV);
    command.args(args);
    if !url.is_empty() {
        command.args(["--endpoint-url", url]);
    }
    let out = command
        .output()
        .expect("run target/debug/tsprov (cargo build first)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tsprov {args:?} failed:\n{text}");
    (start.elapsed().as_secs_f64(), text)
}

/// CPU seconds the emulator (LocalStack) has used so far: it serves every call, so
/// when it is busy, regions wait for it rather than for each other.
fn emulator_cpu() -> f64 {
    let Ok(pid) = std::fs::read_to_string("localstack/.state/localstack.pid") else {
        return 0.0;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

/// "apply complete in 12.3s": the execution phase, after the live state was read.
fn execution_seconds(output: &str) -> f64 {
    output
        .lines()
        .find_map(|l| l.strip_prefix("apply complete in "))
        .and_then(|r| r.split('s').next())
        .and_then(|s| s.parse().ok())
        .expect("apply reports its time")
}

/// (region, address) -> seconds, from progress lines `[ 1.2s eu-west-1] + vpc.main: created vpc-1 (0.4s)`.
fn step_seconds(output: &str) -> HashMap<(String, String), f64> {
    let mut steps = HashMap::new();
    for line in output.lines() {
        let Some((head, rest)) = line.split_once("] ") else {
            continue;
        };
        let Some(region) = head.split_whitespace().last() else {
            continue;
        };
        let Some(rest) = rest.strip_prefix("+ ") else {
            continue;
        };
        let Some((address, outcome)) = rest.split_once(": created ") else {
            continue;
        };
        let Some(secs) = outcome
            .rsplit_once('(')
            .and_then(|(_, s)| s.strip_suffix("s)"))
            .and_then(|s| s.parse::<f64>().ok())
        else {
            continue;
        };
        steps.insert((region.to_string(), address.to_string()), secs);
    }
    steps
}

/// region -> (dependent, dependency) edges, from `tsprov graph --format dot`.
fn edges(dot: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in dot.lines() {
        let Some((a, b)) = line.trim().trim_end_matches(';').split_once(" -> ") else {
            continue;
        };
        let unquote = |s: &str| s.trim_matches('"').to_string();
        let (a, b) = (unquote(a), unquote(b));
        let (region, dependent) = a.split_once('/').unwrap();
        let (_, dependency) = b.split_once('/').unwrap();
        out.entry(region.to_string())
            .or_default()
            .push((dependent.to_string(), dependency.to_string()));
    }
    out
}

/// The longest chain of step times through the dependency DAG.
fn critical_path(steps: &HashMap<String, f64>, edges: &[(String, String)]) -> (f64, Vec<String>) {
    let mut memo: HashMap<String, (f64, Vec<String>)> = HashMap::new();
    fn finish(
        node: &str,
        steps: &HashMap<String, f64>,
        edges: &[(String, String)],
        memo: &mut HashMap<String, (f64, Vec<String>)>,
    ) -> (f64, Vec<String>) {
        if let Some(v) = memo.get(node) {
            return v.clone();
        }
        let mut best = (0.0, Vec::new());
        for (_, dependency) in edges.iter().filter(|(d, _)| d == node) {
            let r = finish(dependency, steps, edges, memo);
            if r.0 > best.0 {
                best = r;
            }
        }
        let mut path = best.1;
        path.push(node.to_string());
        let v = (best.0 + steps.get(node).copied().unwrap_or(0.0), path);
        memo.insert(node.to_string(), v.clone());
        v
    }
    let mut best = (0.0, Vec::new());
    for node in steps.keys() {
        let r = finish(node, steps, edges, &mut memo);
        if r.0 > best.0 {
            best = r;
        }
    }
    best
}

#[tokio::main]
async fn main() {
    let upstream = std::env::var("TSPROV_TEST_ENDPOINT").unwrap_or("http://127.0.0.1:4566".into());
    let latency: u64 = std::env::var("LATENCY_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let slow = proxy::start_faulty(
        upstream,
        proxy::Faults {
            latency: Duration::from_millis(latency),
            ..proxy::Faults::default()
        },
    )
    .await;
    let dir = std::env::temp_dir().join(format!("tsprov-concurrency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("platform.toml");
    std::fs::write(
        &plan,
        std::fs::read_to_string("plans/taskstream.toml")
            .unwrap()
            .replace("protect_data = true", "protect_data = false"),
    )
    .unwrap();
    let plan = plan.display().to_string();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = slow.url.clone();

    let run = |stack: String, regions: Vec<&'static str>| {
        let (url, plan) = (url.clone(), plan.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "apply",
                plan.as_str(),
                "--stack",
                stack.as_str(),
                "--auto-approve",
            ];
            for r in &regions {
                args.extend(["--region", r]);
            }
            let cpu = emulator_cpu();
            let (wall, out) = tsprov(&url, &args);
            let cpu = emulator_cpu() - cpu;
            let mut destroy = vec![
                "destroy",
                plan.as_str(),
                "--stack",
                stack.as_str(),
                "--auto-approve",
            ];
            destroy.extend(ALLOW);
            tsprov(&url, &destroy);
            (wall, out, cpu)
        })
    };
    println!("every AWS call +{latency} ms; the reference platform (48 resources per region)");
    let (one_wall, one_out, one_cpu) = run(format!("conc1-{stamp}"), vec!["us-east-1"])
        .await
        .unwrap();
    let (three_wall, three_out, three_cpu) = run(format!("conc3-{stamp}"), vec![]).await.unwrap();
    let (one_exec, three_exec) = (execution_seconds(&one_out), execution_seconds(&three_out));
    println!();
    let row = |what: &str, wall: f64, exec: f64, cpu: f64| {
        println!("{what:<28} {wall:>10.1} {exec:>12.1} {cpu:>15.1}")
    };
    println!(
        "{:<28} {:>10} {:>12} {:>15}",
        "apply", "wall s", "execution s", "emulator CPU s"
    );
    row("1 region (us-east-1)", one_wall, one_exec, one_cpu);
    row("3 regions", three_wall, three_exec, three_cpu);
    println!(
        "3 regions / 1 region: {:.2}x wall, {:.2}x execution (one region after the other: {:.1} s)",
        three_wall / one_wall,
        three_exec / one_exec,
        3.0 * one_exec
    );

    let (_, dot) = tsprov("", &["graph", plan.as_str()]);
    let graph = edges(&dot);
    let steps = step_seconds(&three_out);
    println!();
    println!(
        "{:<16} {:>6} {:>14} {:>16} {:>12} {:>14}",
        "region", "steps", "sum of steps s", "critical path s", "execution s", "exec / path"
    );
    let mut longest = Vec::new();
    for (region, region_edges) in &graph {
        let mine: HashMap<String, f64> = steps
            .iter()
            .filter(|((r, _), _)| r == region)
            .map(|((_, a), s)| (a.clone(), *s))
            .collect();
        let sum: f64 = mine.values().sum();
        let (path, chain) = critical_path(&mine, region_edges);
        println!(
            "{:<16} {:>6} {:>14.1} {:>16.1} {:>12.1} {:>13.2}x",
            region,
            mine.len(),
            sum,
            path,
            three_exec,
            three_exec / path
        );
        if chain.len() > longest.len() {
            longest = chain;
        }
    }
    println!("\ncritical path: {}", longest.join(" -> "));
    println!(
        "(execution of all regions at once; a region's wall time can only be at least its path)"
    );
    let _ = std::fs::remove_dir_all(dir);
}
