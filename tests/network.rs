//! The reference network (the network layer of plans/taskstream.toml) against LocalStack: apply in three regions, check every
//! resource with the SDK's own describe calls, re-plan to no changes, change the
//! plan (in place, replace, delete), apply one region only, destroy to nothing.

mod common;

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{NatGatewayState, VpcAttributeName};
use common::*;

fn second_octet(region: &str) -> u8 {
    match region {
        "us-east-1" => 10,
        "eu-west-1" => 20,
        _ => 30,
    }
}

/// address tag -> value, for one describe call's items.
fn by_address<T>(
    items: &[T],
    tags: impl Fn(&T) -> &[aws_sdk_ec2::types::Tag],
) -> BTreeMap<String, &T> {
    items
        .iter()
        .map(|i| (tag(tags(i), "tsprov:address").unwrap_or("?").to_string(), i))
        .collect()
}

async fn check_region(region: &str, stack: &str) {
    let ec2 = ec2(region).await;
    let f = stack_filter(stack);
    let x = second_octet(region);
    let azs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|s| format!("{region}{s}"))
        .collect();

    let vpcs = ec2.describe_vpcs().filters(f.clone()).send().await.unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "{region}: one VPC");
    let vpc = &vpcs.vpcs()[0];
    let vpc_id = vpc.vpc_id().unwrap();
    assert_eq!(vpc.cidr_block(), Some(format!("10.{x}.0.0/16").as_str()));
    assert_eq!(tag(vpc.tags(), "tsprov:address"), Some("vpc.main"));
    assert_eq!(tag(vpc.tags(), "Project"), Some("TaskStream"));
    assert_eq!(tag(vpc.tags(), "Compliance"), Some("SOC2"));
    for attr in [
        VpcAttributeName::EnableDnsSupport,
        VpcAttributeName::EnableDnsHostnames,
    ] {
        let a = ec2
            .describe_vpc_attribute()
            .vpc_id(vpc_id)
            .attribute(attr.clone())
            .send()
            .await
            .unwrap();
        let on = a
            .enable_dns_support()
            .or(a.enable_dns_hostnames())
            .and_then(|v| v.value());
        assert_eq!(on, Some(true), "{region}: {attr:?}");
    }

    let subnets = ec2
        .describe_subnets()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    let subnets = by_address(subnets.subnets(), |s| s.tags());
    assert_eq!(subnets.len(), 9, "{region}: {:?}", subnets.keys());
    for i in 0..3 {
        let public = subnets[&format!("subnet.public[{i}]")];
        assert_eq!(
            public.cidr_block(),
            Some(format!("10.{x}.{i}.0/24").as_str())
        );
        assert_eq!(public.availability_zone(), Some(azs[i].as_str()));
        assert_eq!(public.map_public_ip_on_launch(), Some(true));
        assert_eq!(public.vpc_id(), Some(vpc_id));
        let private = subnets[&format!("subnet.private[{i}]")];
        assert_eq!(
            private.cidr_block(),
            Some(format!("10.{x}.{}.0/20", 16 * (i + 1)).as_str())
        );
        assert_eq!(private.map_public_ip_on_launch(), Some(false));
        assert_eq!(
            tag(private.tags(), "kubernetes.io/role/internal-elb"),
            Some("1")
        );
        let database = subnets[&format!("subnet.database[{i}]")];
        assert_eq!(
            database.cidr_block(),
            Some(format!("10.{x}.{}.0/24", 100 + i).as_str())
        );
        assert_eq!(database.availability_zone(), Some(azs[i].as_str()));
    }

    let igws = ec2
        .describe_internet_gateways()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(igws.internet_gateways().len(), 1);
    let igw = &igws.internet_gateways()[0];
    assert_eq!(
        igw.attachments().first().and_then(|a| a.vpc_id()),
        Some(vpc_id)
    );

    let eips = ec2
        .describe_addresses()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    let eips = by_address(eips.addresses(), |a| a.tags());
    assert_eq!(eips.len(), 3);
    let nats = ec2
        .describe_nat_gateways()
        .filter(f.clone())
        .send()
        .await
        .unwrap();
    let nats = by_address(nats.nat_gateways(), |n| n.tags());
    assert_eq!(nats.len(), 3);
    for i in 0..3 {
        let nat = nats[&format!("nat_gateway.main[{i}]")];
        assert_eq!(nat.state(), Some(&NatGatewayState::Available));
        assert_eq!(
            nat.subnet_id(),
            subnets[&format!("subnet.public[{i}]")].subnet_id()
        );
        assert_eq!(
            nat.nat_gateway_addresses()[0].allocation_id(),
            eips[&format!("eip.nat[{i}]")].allocation_id()
        );
    }

    let rts = ec2
        .describe_route_tables()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    let rts = by_address(rts.route_tables(), |r| r.tags());
    assert_eq!(rts.len(), 4);
    let public = rts["route_table.public"];
    let default_route = public
        .routes()
        .iter()
        .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
        .unwrap();
    assert_eq!(default_route.gateway_id(), igw.internet_gateway_id());
    let mut assoc: Vec<&str> = public
        .associations()
        .iter()
        .filter_map(|a| a.subnet_id())
        .collect();
    assoc.sort();
    let mut want: Vec<&str> = (0..3)
        .map(|i| subnets[&format!("subnet.public[{i}]")].subnet_id().unwrap())
        .collect();
    want.sort();
    assert_eq!(assoc, want);
    for i in 0..3 {
        let private = rts[&format!("route_table.private[{i}]")];
        let route = private
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .unwrap();
        assert_eq!(
            route.nat_gateway_id(),
            nats[&format!("nat_gateway.main[{i}]")].nat_gateway_id()
        );
        let mut assoc: Vec<&str> = private
            .associations()
            .iter()
            .filter_map(|a| a.subnet_id())
            .collect();
        assoc.sort();
        let mut want = vec![
            subnets[&format!("subnet.private[{i}]")]
                .subnet_id()
                .unwrap(),
            subnets[&format!("subnet.database[{i}]")]
                .subnet_id()
                .unwrap(),
        ];
        want.sort();
        assert_eq!(
            assoc, want,
            "{region}: route_table.private[{i}] associations"
        );
    }

    let sgs = ec2
        .describe_security_groups()
        .filters(f)
        .send()
        .await
        .unwrap();
    let sgs = by_address(sgs.security_groups(), |g| g.tags());
    assert_eq!(sgs.len(), 4, "{:?}", sgs.keys());
    let nodes = sgs["security_group.eks_nodes"].group_id().unwrap();
    let db = sgs["security_group.database"];
    assert_eq!(db.vpc_id(), Some(vpc_id));
    assert_eq!(db.ip_permissions().len(), 1);
    let rule = &db.ip_permissions()[0];
    assert_eq!(
        (rule.ip_protocol(), rule.from_port(), rule.to_port()),
        (Some("tcp"), Some(5432), Some(5432))
    );
    assert_eq!(rule.user_id_group_pairs()[0].group_id(), Some(nodes));
    assert!(
        rule.ip_ranges().is_empty(),
        "database must not be open to a CIDR"
    );
    assert!(
        db.ip_permissions_egress().is_empty(),
        "database egress was declared empty"
    );
    let cache = sgs["security_group.cache"];
    assert_eq!(cache.ip_permissions()[0].from_port(), Some(6379));
    let cluster = sgs["security_group.eks_cluster"];
    assert_eq!(
        cluster.ip_permissions()[0].user_id_group_pairs()[0].group_id(),
        Some(nodes)
    );

    let kms = kms(region).await;
    let aliases = kms.list_aliases().send().await.unwrap();
    let alias = aliases
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some(format!("alias/{stack}/main").as_str()))
        .expect("key alias");
    let key_id = alias.target_key_id().unwrap();
    let rotation = kms
        .get_key_rotation_status()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    assert!(rotation.key_rotation_enabled());
    let tags = kms
        .list_resource_tags()
        .key_id(key_id)
        .send()
        .await
        .unwrap();
    assert!(tags
        .tags()
        .iter()
        .any(|t| t.tag_key() == "tsprov:stack" && t.tag_value() == stack));
}

fn actions(plan: &serde_json::Value, region: &str) -> BTreeMap<String, String> {
    let r = plan["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == region)
        .unwrap();
    r["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["address"].as_str().unwrap().to_string(),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reference_network_lifecycle() {
    require_localstack();
    let stack = unique_stack("net");
    let dir = tempfile::tempdir().unwrap();
    let original = network_plan_text();
    let plan = write_plan(&dir, "network.toml", &original);
    let plan = plan.as_str();

    // From empty: the plan lists the whole network; apply builds it in all three regions.
    let first = tsprov("plan", plan, &stack, &["--json"]).ok().json();
    assert_eq!(first["summary"]["add"], 90, "{first}");
    tsprov("apply", plan, &stack, &["--auto-approve"]).ok();
    for region in REGIONS {
        check_region(region, &stack).await;
    }

    // Converged: no changes, exit 0 with --detailed-exitcode, and few API calls.
    let again = tsprov("plan", plan, &stack, &["--detailed-exitcode", "--json"]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    let calls = again.json()["api_calls"].as_u64().unwrap();
    // One batched read per kind and region, plus the per-VPC and per-key reads AWS has no batch for.
    assert!(calls <= 3 * 25, "a no-change plan made {calls} calls");
    eprintln!("no-change plan of the reference network: {calls} API calls");

    // Change the plan: in place (tag, rule), replace (subnet CIDR), delete (a group).
    let cache_block = original.find("[security_group.cache]").unwrap();
    let changed = original[..cache_block]
        .replace("netnum = 100 }", "netnum = 110 }")
        .replace("enable_dns_hostnames = true\n", "enable_dns_hostnames = true\ntags = { CostCenter = \"42\" }\n")
        .replace(
            "ingress = [{ port = 5432, security_group = \"security_group.eks_nodes\", description = \"PostgreSQL from EKS nodes\" }]",
            "ingress = [{ port = 5432, security_group = \"security_group.eks_nodes\", description = \"PostgreSQL from EKS nodes\" },\n  { port = 5433, security_group = \"security_group.eks_nodes\", description = \"PgBouncer\" }]",
        );
    let changed_plan = write_plan(&dir, "changed.toml", &changed);
    let diff = tsprov(
        "plan",
        &changed_plan,
        &stack,
        &["--json", "--detailed-exitcode"],
    );
    assert_eq!(diff.code, 2, "{}", diff.stderr);
    let diff = diff.json();
    for region in REGIONS {
        let a = actions(&diff, region);
        for i in 0..3 {
            assert_eq!(a[&format!("subnet.database[{i}]")], "replace");
            assert_eq!(a[&format!("route_table.private[{i}]")], "update");
        }
        assert_eq!(a["vpc.main"], "update");
        assert_eq!(a["security_group_rules.database"], "update");
        assert_eq!(a["security_group.cache"], "delete");
        assert_eq!(a["security_group_rules.cache"], "delete");
        assert_eq!(a.len(), 10, "{region}: {a:?}");
    }
    let text = tsprov("plan", &changed_plan, &stack, &[]).ok().stdout;
    assert!(text.contains("-/+ subnet.database[0]"), "{text}");
    assert!(text.contains("cidr_block forces replacement"), "{text}");
    assert!(
        text.contains("Plan: 0 to add, 15 to change, 9 to replace, 6 to destroy."),
        "{text}"
    );

    tsprov("apply", &changed_plan, &stack, &["--auto-approve"]).ok();
    assert_eq!(
        tsprov("plan", &changed_plan, &stack, &["--detailed-exitcode"]).code,
        0
    );
    for region in REGIONS {
        let ec2 = ec2(region).await;
        let x = second_octet(region);
        let subnets = ec2
            .describe_subnets()
            .filters(stack_filter(&stack))
            .send()
            .await
            .unwrap();
        let subnets = by_address(subnets.subnets(), |s| s.tags());
        assert_eq!(subnets.len(), 9, "no subnet left behind or doubled");
        assert_eq!(
            subnets["subnet.database[1]"].cidr_block(),
            Some(format!("10.{x}.111.0/24").as_str())
        );
        let vpcs = ec2
            .describe_vpcs()
            .filters(stack_filter(&stack))
            .send()
            .await
            .unwrap();
        assert_eq!(tag(vpcs.vpcs()[0].tags(), "CostCenter"), Some("42"));
        let sgs = ec2
            .describe_security_groups()
            .filters(stack_filter(&stack))
            .send()
            .await
            .unwrap();
        let sgs = by_address(sgs.security_groups(), |g| g.tags());
        assert!(!sgs.contains_key("security_group.cache"));
        let mut ports: Vec<i32> = sgs["security_group.database"]
            .ip_permissions()
            .iter()
            .filter_map(|p| p.from_port())
            .collect();
        ports.sort();
        assert_eq!(ports, vec![5432, 5433]);
    }

    // --region touches only that region.
    let retagged = changed.replace("Owner = \"platform\"", "Owner = \"sre\"");
    let retagged_plan = write_plan(&dir, "retagged.toml", &retagged);
    tsprov(
        "apply",
        &retagged_plan,
        &stack,
        &["--auto-approve", "--region", "eu-west-1"],
    )
    .ok();
    for region in REGIONS {
        let vpcs = ec2(region)
            .await
            .describe_vpcs()
            .filters(stack_filter(&stack))
            .send()
            .await
            .unwrap();
        let owner = tag(vpcs.vpcs()[0].tags(), "Owner").unwrap().to_string();
        assert_eq!(
            owner,
            if region == "eu-west-1" {
                "sre"
            } else {
                "platform"
            },
            "{region}"
        );
    }
    let rest = tsprov("plan", &retagged_plan, &stack, &["--json"])
        .ok()
        .json();
    assert!(actions(&rest, "eu-west-1").is_empty());
    assert!(!actions(&rest, "us-east-1").is_empty());

    // Destroy leaves nothing tagged with the stack.
    let refused = tsprov("destroy", &retagged_plan, &stack, &["--auto-approve"]);
    assert_eq!(refused.code, 1, "a KMS key goes only with --allow-destroy");
    assert!(
        refused.stdout.contains("! blocked: a KMS key"),
        "{}",
        refused.stdout
    );
    assert!(
        !leftovers("eu-west-1", &stack).await.is_empty(),
        "a refused destroy changed nothing"
    );
    tsprov(
        "destroy",
        &retagged_plan,
        &stack,
        &["--auto-approve", "--allow-destroy", "kms_key.main"],
    )
    .ok();
    for region in REGIONS {
        let left = leftovers(region, &stack).await;
        assert!(left.is_empty(), "{region}: left behind: {left:?}");
    }
    let again = tsprov("destroy", &retagged_plan, &stack, &["--auto-approve"]).ok();
    assert!(
        again.stdout.contains("Nothing to destroy"),
        "{}",
        again.stdout
    );
}
