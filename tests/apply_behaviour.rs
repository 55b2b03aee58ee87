//! Apply's promises against LocalStack: saved plans only apply to the live state
//! they were made from; a failed resource stops only what depends on it; the
//! single-NAT switch; --region isolation is covered in network.rs.

mod common;

use common::*;

const SMALL: &str = r#"
[stack]
name = "small"
tags = { Project = "TaskStream" }

[regions.eu-west-1]
azs = ["eu-west-1a", "eu-west-1b"]

[vpc.main]
cidr_block = "10.40.0.0/16"
soc2_exceptions = { flow-logs = "short-lived test VPC with no traffic" }

[subnet.app]
per_az = true
vpc = "vpc.main"
cidr_block = { within = "vpc.main", newbits = 8, netnum = 0 }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn saved_plan_applies_only_to_unchanged_live_state() {
    require_localstack();
    let stack = unique_stack("saved");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(&dir, "small.toml", SMALL);
    let saved = dir.path().join("plan.json").display().to_string();

    tsprov("plan", &plan, &stack, &["--out", &saved]).ok();
    let applied = tsprov("apply", &saved, &stack, &[]).ok();
    assert!(
        applied.stdout.contains("apply complete"),
        "{}",
        applied.stdout
    );
    assert_eq!(
        tsprov("plan", &plan, &stack, &["--detailed-exitcode"]).code,
        0
    );

    // A second saved plan goes stale when someone changes AWS in between.
    let tagged = write_plan(
        &dir,
        "tagged.toml",
        &SMALL.replace(
            "cidr_block = \"10.40.0.0/16\"",
            "cidr_block = \"10.40.0.0/16\"\ntags = { Team = \"sre\" }",
        ),
    );
    let stale = dir.path().join("stale.json").display().to_string();
    tsprov("plan", &tagged, &stack, &["--out", &stale]).ok();
    let ec2 = ec2("eu-west-1").await;
    let vpcs = ec2
        .describe_vpcs()
        .filters(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    let vpc_id = vpcs.vpcs()[0].vpc_id().unwrap().to_string();
    ec2.create_tags()
        .resources(&vpc_id)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("Hand")
                .value("made")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let refused = tsprov("apply", &stale, &stack, &[]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("live state in AWS changed since this plan was saved"),
        "{}",
        refused.stderr
    );
    let vpcs = ec2.describe_vpcs().vpc_ids(&vpc_id).send().await.unwrap();
    assert_eq!(
        tag(vpcs.vpcs()[0].tags(), "Team"),
        None,
        "a refused saved plan changed nothing"
    );

    tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_resource_stops_only_its_dependents() {
    require_localstack();
    let stack = unique_stack("fail");
    let dir = tempfile::tempdir().unwrap();
    // eu-west-1z passes the name check but EC2 has no such zone: CreateSubnet fails.
    let text = format!(
        "{SMALL}\n[subnet.broken]\nvpc = \"vpc.main\"\ncidr_block = \"10.40.9.0/24\"\navailability_zone = \"eu-west-1z\"\n\n[route_table.broken]\nvpc = \"vpc.main\"\nsubnets = [\"subnet.broken\"]\n"
    );
    let plan = write_plan(&dir, "broken.toml", &text);
    let run = tsprov("apply", &plan, &stack, &["--auto-approve"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("eu-west-1: 3 done, 1 failed, 1 skipped"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("failed subnet.broken: CreateSubnet failed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "skipped route_table.broken: not started: it waits for subnet.broken, which failed"
        ),
        "{}",
        run.stdout
    );
    let ec2 = ec2("eu-west-1").await;
    let subnets = ec2
        .describe_subnets()
        .filters(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    assert_eq!(
        subnets.subnets().len(),
        2,
        "the healthy subnets were created"
    );

    tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn single_nat_switch_builds_one_nat_per_region() {
    require_localstack();
    let stack = unique_stack("onenat");
    let dir = tempfile::tempdir().unwrap();
    let text = network_plan_text().replace("nat_per_az = true", "nat_per_az = false");
    let plan = write_plan(&dir, "onenat.toml", &text);
    tsprov(
        "apply",
        &plan,
        &stack,
        &["--auto-approve", "--region", "ap-southeast-1"],
    )
    .ok();
    let ec2 = ec2("ap-southeast-1").await;
    let nats = ec2
        .describe_nat_gateways()
        .filter(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    assert_eq!(nats.nat_gateways().len(), 1);
    let nat_id = nats.nat_gateways()[0].nat_gateway_id().unwrap();
    assert_eq!(
        tag(nats.nat_gateways()[0].tags(), "tsprov:address"),
        Some("nat_gateway.main")
    );
    let eips = ec2
        .describe_addresses()
        .filters(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    assert_eq!(eips.addresses().len(), 1);
    let rts = ec2
        .describe_route_tables()
        .filters(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    let private: Vec<_> = rts
        .route_tables()
        .iter()
        .filter(|r| {
            tag(r.tags(), "tsprov:address")
                .unwrap()
                .starts_with("route_table.private")
        })
        .collect();
    assert_eq!(private.len(), 3);
    for rt in private {
        assert!(
            rt.routes()
                .iter()
                .any(|r| r.nat_gateway_id() == Some(nat_id)),
            "every private table routes to the one NAT"
        );
    }
    // Other regions were not touched.
    assert!(leftovers("us-east-1", &stack).await.is_empty());
    tsprov(
        "destroy",
        &plan,
        &stack,
        &["--auto-approve", "--allow-destroy", "kms_key.main"],
    )
    .ok();
    assert!(leftovers("ap-southeast-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_names_what_still_lives_in_the_vpc() {
    require_localstack();
    let stack = unique_stack("blocked");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(&dir, "small.toml", SMALL);
    tsprov("apply", &plan, &stack, &["--auto-approve"]).ok();
    // Someone made a subnet by hand in the stack's VPC: AWS answers DependencyViolation.
    let ec2 = ec2("eu-west-1").await;
    let vpcs = ec2
        .describe_vpcs()
        .filters(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    let vpc_id = vpcs.vpcs()[0].vpc_id().unwrap().to_string();
    let stray = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.40.200.0/24")
        .availability_zone("eu-west-1a")
        .send()
        .await
        .unwrap();
    let stray_id = stray.subnet().unwrap().subnet_id().unwrap().to_string();

    let blocked = tsprov_env(
        "destroy",
        &plan,
        &stack,
        &["--auto-approve"],
        &[("TSPROV_DEPENDENCY_TIMEOUT", "2")],
    );
    assert_eq!(blocked.code, 1, "{}", blocked.stdout);
    assert!(
        blocked.stdout.contains("failed vpc.main"),
        "{}",
        blocked.stdout
    );
    assert!(
        blocked
            .stdout
            .contains(&format!("still holds: subnet {stray_id}")),
        "{}",
        blocked.stdout
    );
    assert!(
        blocked.stdout.contains("DependencyViolation"),
        "{}",
        blocked.stdout
    );

    ec2.delete_subnet()
        .subnet_id(&stray_id)
        .send()
        .await
        .unwrap();
    tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_change_plan_calls_do_not_grow_with_resources() {
    require_localstack();
    let stack = unique_stack("calls");
    let dir = tempfile::tempdir().unwrap();
    let small = write_plan(&dir, "small.toml", SMALL);
    tsprov("apply", &small, &stack, &["--auto-approve"]).ok();
    let calls = |plan: &str| {
        let run = tsprov("plan", plan, &stack, &["--json", "--detailed-exitcode"]);
        assert_eq!(run.code, 0, "not converged: {}", run.stdout);
        run.json()["api_calls"].as_u64().unwrap()
    };
    let few = calls(&small);
    // Five times the subnets and eight security groups: the same reads.
    let mut bigger = SMALL.replace("[subnet.app]", "[subnet.app0]");
    for i in 1..5 {
        bigger.push_str(&format!("\n[subnet.app{i}]\nper_az = true\nvpc = \"vpc.main\"\ncidr_block = {{ within = \"vpc.main\", newbits = 8, netnum = {} }}\n", 10 * i));
    }
    for i in 0..8 {
        bigger.push_str(&format!("\n[security_group.g{i}]\nvpc = \"vpc.main\"\ningress = [{{ port = {}, cidr = \"10.40.0.0/16\" }}]\n", 8000 + i));
    }
    let bigger = write_plan(&dir, "bigger.toml", &bigger);
    tsprov("apply", &bigger, &stack, &["--auto-approve"]).ok();
    let many = calls(&bigger);
    eprintln!("no-change plan: {few} calls for 3 resources, {many} calls for 27 resources");
    assert_eq!(few, many);
    tsprov("destroy", &bigger, &stack, &["--auto-approve"]).ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn nat_gateway_waiter_reports_progress_times_out_and_the_next_run_converges() {
    require_localstack();
    let stack = unique_stack("slow");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{SMALL}\n[eip.nat]\n\n[nat_gateway.main]\nsubnet = \"subnet.app[0]\"\neip = \"eip.nat\"\n"
    );
    let plan = write_plan(&dir, "nat.toml", &text);
    // The proxy holds every NAT gateway in `pending`, as real AWS does for minutes.
    let slow = proxy::start_faulty(
        endpoint(),
        proxy::Faults {
            hold_pending: 1.0,
            ..proxy::Faults::default()
        },
    )
    .await;
    // 10 min x 0.005 = a 3 s timeout; progress every 0.5 s.
    let env = [
        ("TSPROV_WAIT_SCALE", "0.005"),
        ("TSPROV_PROGRESS_SECONDS", "0.5"),
    ];
    let run = tokio::task::spawn_blocking({
        let (url, plan, stack) = (slow.url.clone(), plan.clone(), stack.clone());
        move || tsprov_via(&url, "apply", &plan, &stack, &["--auto-approve"], &env)
    })
    .await
    .unwrap();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("still waiting for nat_gateway.main nat-"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("to become available: pending after"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("failed nat_gateway.main: timed out after"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("(timeout 3s)"),
        "the scaled waiter timeout: {}",
        run.stderr
    );
    assert!(run.stdout.contains("(still pending)"), "{}", run.stdout);
    assert!(
        slow.operations
            .lock()
            .unwrap()
            .iter()
            .filter(|o| *o == "DescribeNatGateways")
            .count()
            >= 3
    );

    // Without the hold the gateway is available: the next run adopts it, no duplicate.
    tsprov("apply", &plan, &stack, &["--auto-approve"]).ok();
    let nats = ec2("eu-west-1")
        .await
        .describe_nat_gateways()
        .filter(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    assert_eq!(nats.nat_gateways().len(), 1, "one NAT gateway, not two");
    tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_starts_nothing_new_and_reports_what_was_done() {
    require_localstack();
    let stack = unique_stack("sigint");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{SMALL}\n[eip.nat]\n\n[nat_gateway.main]\nsubnet = \"subnet.app[0]\"\neip = \"eip.nat\"\n\n[route_table.private]\nvpc = \"vpc.main\"\nroutes = [{{ destination = \"0.0.0.0/0\", nat_gateway = \"nat_gateway.main\" }}]\n"
    );
    let plan = write_plan(&dir, "nat.toml", &text);
    let slow = proxy::start_faulty(
        endpoint(),
        proxy::Faults {
            hold_pending: 1.0,
            ..proxy::Faults::default()
        },
    )
    .await;
    let child = tsprov_command()
        .args([
            "apply",
            &plan,
            "--stack",
            &stack,
            "--endpoint-url",
            &slow.url,
            "--auto-approve",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (stdout, stderr, code) = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, Read};
        let mut child = child;
        // Interrupt while the NAT gateway's waiter runs (it is held pending), however slow
        // the start: wait for the line that says its create began.
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut stderr = String::new();
        let mut line = String::new();
        while err.read_line(&mut line).unwrap() > 0 {
            stderr.push_str(&line);
            let started = line.contains("+ nat_gateway.main: creating");
            line.clear();
            if started {
                std::thread::sleep(std::time::Duration::from_millis(500));
                std::process::Command::new("kill")
                    .args(["-INT", &pid])
                    .status()
                    .unwrap();
                break;
            }
        }
        err.read_to_string(&mut stderr).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
            out.status.code(),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("interrupt: no new step starts"), "{stderr}");
    assert!(stdout.contains("apply INTERRUPTED"), "{stdout}");
    assert!(
        stdout.contains("eu-west-1: 4 done, 1 failed, 1 skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed nat_gateway.main: interrupted while waiting for nat_gateway.main"),
        "{stdout}"
    );

    // The next run picks the gateway up: one NAT gateway, converged.
    tsprov("apply", &plan, &stack, &["--auto-approve"]).ok();
    let nats = ec2("eu-west-1")
        .await
        .describe_nat_gateways()
        .filter(stack_filter(&stack))
        .send()
        .await
        .unwrap();
    assert_eq!(nats.nat_gateways().len(), 1);
    tsprov("destroy", &plan, &stack, &["--auto-approve"]).ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}
