//! Every broken plan under tests/plans/invalid fails `tsprov validate` with exit
//! code 1 and each message its `# expect:` lines name (with file:line:col).
//! `validate` makes no AWS call: the endpoint is pointed at a closed port, so a
//! call would show up as an error other than the expected ones.

use std::path::Path;
use std::process::Command;

fn tsprov() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tsprov"));
    c.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "none")
        .env("AWS_SECRET_ACCESS_KEY", "none");
    c
}

#[test]
fn reference_plan_is_valid() {
    let out = tsprov()
        .args(["validate", "plans/taskstream.toml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("valid: stack taskstream, 3 regions, 144 resources"),
        "{stdout}"
    );
}

#[test]
fn every_broken_plan_fails_with_its_messages() {
    let dir = Path::new("tests/plans/invalid");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the corpus shrank: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no # expect: line",
            file.display()
        );
        let out = tsprov().arg("validate").arg(file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{}: exit code {:?}, want 1",
                file.display(),
                out.status.code()
            ));
        }
        if !out.stdout.is_empty() {
            failures.push(format!(
                "{}: printed on stdout: {}",
                file.display(),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        for e in expected {
            if !stderr.contains(e) {
                failures.push(format!("{}: missing {e:?} in:\n{stderr}", file.display()));
            }
        }
        assert!(stderr.contains("nothing was sent to AWS"), "{stderr}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn plan_with_invalid_file_makes_no_aws_call_and_exits_1() {
    let out = tsprov()
        .args(["plan", "tests/plans/invalid/many_problems.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("5 problems found; nothing was sent to AWS"),
        "{stderr}"
    );
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let dot = tsprov()
        .args(["graph", "plans/taskstream.toml"])
        .output()
        .unwrap();
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(dot.starts_with("digraph \"taskstream\""), "{dot}");
    assert!(
        dot.contains("\"eu-west-1/nat_gateway.main[1]\" -> \"eu-west-1/subnet.public[1]\";"),
        "{dot}"
    );
    let mermaid = tsprov()
        .args(["graph", "--format", "mermaid", "plans/taskstream.toml"])
        .output()
        .unwrap();
    let mermaid = String::from_utf8_lossy(&mermaid.stdout);
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(
        mermaid.contains("us_east_1_route_table_private_0_ --> us_east_1_nat_gateway_main_0_"),
        "{mermaid}"
    );
}

#[test]
fn a_reasoned_exception_lifts_a_soc2_control() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("exception.toml");
    std::fs::write(
        &plan,
        r#"
[stack]
name = "ok"
[regions.eu-west-1]
azs = ["eu-west-1a"]
[kms_key.legacy]
enable_key_rotation = false
soc2_exceptions = { key-rotation = "imported key material cannot rotate; rotated by hand every 90 days" }
"#,
    )
    .unwrap();
    let out = tsprov().arg("validate").arg(&plan).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        &plan,
        std::fs::read_to_string(&plan)
            .unwrap()
            .replace("soc2_exceptions", "# soc2_exceptions"),
    )
    .unwrap();
    let out = tsprov().arg("validate").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SOC 2 control key-rotation"));
}

#[test]
fn deploy_manifests_keep_their_promises() {
    let cron = std::fs::read_to_string("deploy/drift-cronjob.yaml").unwrap();
    for needle in [
        "namespace: monitoring",
        "concurrencyPolicy: Forbid",
        "eks.amazonaws.com/role-arn:",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "limits:",
        "args: [\"drift\", \"/plans/taskstream.toml\", \"--json\"]",
    ] {
        assert!(
            cron.contains(needle),
            "deploy/drift-cronjob.yaml lacks {needle:?}"
        );
    }
    let docker = std::fs::read_to_string("deploy/Dockerfile").unwrap();
    assert_eq!(
        docker.matches("\nFROM ").count() + docker.starts_with("FROM ") as usize,
        2,
        "multi-stage: a build and a runtime image"
    );
    assert!(
        docker.contains("USER nonroot"),
        "the runtime image runs as non-root"
    );
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("deploy/drift-readonly-policy.json").unwrap(),
    )
    .unwrap();
    for action in policy["Statement"][0]["Action"].as_array().unwrap() {
        let name = action.as_str().unwrap().split(':').nth(1).unwrap();
        assert!(
            ["Describe", "List", "Get"]
                .iter()
                .any(|p| name.starts_with(p)),
            "{action} is not read-only"
        );
    }
}
