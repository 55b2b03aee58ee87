//! `tsprov drift` against LocalStack: no false alarm on an untouched platform,
//! every out-of-band change found exactly, read-only for real (a proxy refuses
//! anything else), apply repairs, the scheduled loop stops cleanly on SIGTERM.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn findings(report: &serde_json::Value, region: &str) -> BTreeMap<String, serde_json::Value> {
    let r = report["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == region)
        .unwrap();
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["address"].as_str().unwrap().to_string(), f.clone()))
        .collect()
}

fn drifted(f: &serde_json::Value, name: &str) -> (serde_json::Value, serde_json::Value) {
    let a = f["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {f}"));
    (a["expected"].clone(), a["actual"].clone())
}

/// The IAM action of an operation as tsprov's call counter names it (`S3:GetBucketTagging`).
fn iam_action(op: &str) -> String {
    let (service, name) = op.split_once(':').unwrap();
    let prefix = match service {
        "EC2" => "ec2",
        "KMS" => "kms",
        "IAM" => "iam",
        "CloudWatch Logs" => "logs",
        "EKS" => "eks",
        "RDS" => "rds",
        "ElastiCache" => "elasticache",
        "S3" => "s3",
        other => panic!("unknown service {other}"),
    };
    let name = match (prefix, name) {
        ("s3", "ListBuckets") => "ListAllMyBuckets",
        ("s3", "GetBucketEncryption") => "GetEncryptionConfiguration",
        ("s3", "GetPublicAccessBlock") => "GetBucketPublicAccessBlock",
        (_, n) => n,
    };
    format!("{prefix}:{name}")
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_finds_every_out_of_band_change_and_apply_repairs_it() {
    require_localstack();
    let stack = unique_stack("drift");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        &dir,
        "plan.toml",
        &std::fs::read_to_string("plans/taskstream.toml")
            .unwrap()
            .replace("protect_data = true", "protect_data = false"),
    );
    tsprov("apply", &plan, &stack, &["--auto-approve"]).ok();

    // Untouched: in sync everywhere, exit 0, no false alarm.
    let metrics = dir.path().join("drift.prom");
    let clean = tsprov(
        "drift",
        &plan,
        &stack,
        &["--json", "--metrics-file", metrics.to_str().unwrap()],
    );
    assert_eq!(clean.code, 0, "false alarm:\n{}", clean.stdout);
    let report = clean.json();
    assert_eq!(report["schema"], "tsprov.drift/v1");
    assert_eq!(report["in_sync"], true);
    eprintln!(
        "drift of the whole platform: {} API calls",
        report["api_calls"]
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains(&format!("tsprov_drift_resources{{stack=\"{stack}\",region=\"eu-west-1\",finding=\"modified\"}} 0")), "{prom}");
    assert!(
        prom.contains(&format!(
            "tsprov_drift_last_run_success{{stack=\"{stack}\"}} 1"
        )),
        "{prom}"
    );

    // Read-only for real: through a proxy that refuses anything but reads, drift works,
    // and every call it makes is in the deployed read-only IAM policy.
    let gate = proxy::start_read_only(endpoint()).await;
    let guarded = tokio::task::spawn_blocking({
        let (url, plan, stack) = (gate.url.clone(), plan.clone(), stack.clone());
        move || tsprov_via(&url, "drift", &plan, &stack, &["--json"], &[])
    })
    .await
    .unwrap();
    assert_eq!(guarded.code, 0, "{}\n{}", guarded.stdout, guarded.stderr);
    assert!(
        gate.refused.lock().unwrap().is_empty(),
        "drift made a mutating call: {:?}",
        gate.refused.lock().unwrap()
    );
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("deploy/drift-readonly-policy.json").unwrap(),
    )
    .unwrap();
    let allowed: Vec<&str> = policy["Statement"][0]["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for op in guarded.json()["api_calls_by_operation"]
        .as_object()
        .unwrap()
        .keys()
    {
        let action = iam_action(op);
        assert!(
            allowed.contains(&action.as_str()),
            "{op} ({action}) is not in deploy/drift-readonly-policy.json"
        );
    }

    // Out-of-band changes in eu-west-1, as someone with the console or the CLI would make.
    let region = "eu-west-1";
    let ec2 = ec2(region).await;
    let sgs = ec2
        .describe_security_groups()
        .filters(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    let db_sg = sgs
        .security_groups()
        .iter()
        .find(|g| tag(g.tags(), "tsprov:address") == Some("security_group.database"))
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    let vpc_id = sgs.security_groups()[0].vpc_id().unwrap().to_string();
    ec2.authorize_security_group_ingress()
        .group_id(&db_sg)
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .cidr_ip("10.0.0.0/8")
        .send()
        .await
        .unwrap();
    let kms = kms(region).await;
    let aliases = kms.list_aliases().send().await.unwrap();
    let key = aliases
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some(format!("alias/{stack}/main").as_str()))
        .unwrap()
        .target_key_id()
        .unwrap()
        .to_string();
    kms.disable_key_rotation()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    let bucket = format!("{stack}-{region}-data-lake");
    s3(region)
        .await
        .put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await
        .unwrap();
    eks(region)
        .await
        .update_nodegroup_config()
        .cluster_name(format!("{stack}-main"))
        .nodegroup_name("app")
        .scaling_config(
            aws_sdk_eks::types::NodegroupScalingConfig::builder()
                .min_size(3)
                .desired_size(5)
                .max_size(12)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let subnets = ec2
        .describe_subnets()
        .filters(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    let public0 = subnets
        .subnets()
        .iter()
        .find(|s| tag(s.tags(), "tsprov:address") == Some("subnet.public[0]"))
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_string();
    ec2.delete_tags()
        .resources(&public0)
        .tags(aws_sdk_ec2::types::Tag::builder().key("Tier").build())
        .send()
        .await
        .unwrap();
    let rogue = ec2
        .create_security_group()
        .group_name(format!("{stack}-rogue"))
        .description("made by hand")
        .vpc_id(&vpc_id)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("tsprov:stack")
                        .value(&stack)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    let flows = ec2
        .describe_flow_logs()
        .filter(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    ec2.delete_flow_logs()
        .flow_log_ids(flows.flow_logs()[0].flow_log_id().unwrap())
        .send()
        .await
        .unwrap();

    let found = tsprov(
        "drift",
        &plan,
        &stack,
        &[
            "--json",
            "--region",
            region,
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(found.code, 2, "{}\n{}", found.stdout, found.stderr);
    let report = found.json();
    let f = findings(&report, region);
    assert_eq!(
        report["summary"],
        serde_json::json!({ "modified": 5, "missing": 1, "unmanaged": 1 }),
        "{f:#?}"
    );
    assert_eq!(f["kms_key.main"]["finding"], "modified");
    assert_eq!(
        drifted(&f["kms_key.main"], "enable_key_rotation"),
        (serde_json::json!(true), serde_json::json!(false))
    );
    assert_eq!(
        drifted(&f["s3_bucket.data_lake"], "versioning"),
        (serde_json::json!(true), serde_json::json!(false))
    );
    assert_eq!(
        drifted(&f["eks_node_group.app"], "desired_size"),
        (serde_json::json!(3), serde_json::json!(5))
    );
    let (expected, actual) = drifted(&f["subnet.public[0]"], "tags");
    assert_eq!(expected["Tier"], "public");
    assert!(actual.get("Tier").is_none());
    let (expected, actual) = drifted(&f["security_group_rules.database"], "ingress");
    assert_eq!(
        expected.as_array().unwrap().len() + 1,
        actual.as_array().unwrap().len()
    );
    assert!(actual.to_string().contains("10.0.0.0/8"));
    assert_eq!(f["flow_log.vpc"]["finding"], "missing");
    let unmanaged: Vec<&serde_json::Value> =
        f.values().filter(|x| x["finding"] == "unmanaged").collect();
    assert_eq!(unmanaged.len(), 1);
    assert_eq!(unmanaged[0]["id"], rogue.as_str());
    assert_eq!(f.len(), 7, "{f:#?}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains(&format!("tsprov_drift_resources{{stack=\"{stack}\",region=\"eu-west-1\",finding=\"modified\"}} 5")), "{prom}");
    let text = tsprov("drift", &plan, &stack, &["--region", region]);
    assert_eq!(text.code, 2);
    assert!(
        text.stdout
            .contains("enable_key_rotation: expected true, actual false"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("flow_log.vpc: missing: declared, not found in AWS"),
        "{}",
        text.stdout
    );
    // The other regions were not touched.
    assert_eq!(
        tsprov(
            "drift",
            &plan,
            &stack,
            &["--region", "us-east-1", "--region", "ap-southeast-1"]
        )
        .code,
        0
    );

    // apply repairs the drift; drift is clean again.
    tsprov(
        "apply",
        &plan,
        &stack,
        &["--auto-approve", "--region", region],
    )
    .ok();
    let repaired = tsprov("drift", &plan, &stack, &["--json"]);
    assert_eq!(repaired.code, 0, "{}", repaired.stdout);

    let mut args = vec!["--auto-approve"];
    args.extend_from_slice(ALLOW_DATA_LOSS);
    tsprov("destroy", &plan, &stack, &args).ok();
    for region in REGIONS {
        assert!(leftovers(region, &stack).await.is_empty());
    }
}

#[test]
fn drift_every_runs_again_and_stops_on_sigterm() {
    require_localstack();
    let stack = unique_stack("every");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        &dir,
        "key.toml",
        "[stack]\nname = \"k\"\n[regions.eu-west-1]\nazs = [\"eu-west-1a\"]\n[kms_key.main]\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsprov"))
        .args([
            "drift",
            &plan,
            "--stack",
            &stack,
            "--endpoint-url",
            &endpoint(),
            "--every",
            "1s",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop it once two runs have reported, however slow the machine.
    use std::io::{BufRead, Read};
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let (mut stdout, mut line, mut runs) = (String::new(), String::new(), 0);
    let started = std::time::Instant::now();
    while runs < 2
        && started.elapsed() < Duration::from_secs(120)
        && reader.read_line(&mut line).unwrap() > 0
    {
        runs += line.contains("kms_key.main: missing") as usize;
        stdout.push_str(&line);
        line.clear();
    }
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    reader.read_to_string(&mut stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The key is missing (never applied): each run reports it, and the loop goes on.
    assert!(
        stdout.matches("kms_key.main: missing").count() >= 2,
        "{stdout}"
    );
    assert!(stderr.contains("next drift run in 1s"), "{stderr}");
    assert!(stderr.trim_end().ends_with("drift: stopped"), "{stderr}");
}
