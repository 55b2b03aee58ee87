//! Helpers for the integration tests: run the tsprov binary against LocalStack
//! under a unique stack name, and read AWS back with the SDK's own calls.
#![allow(dead_code)]

pub mod proxy;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
use aws_sdk_ec2::types::Filter;

pub const REGIONS: [&str; 3] = ["ap-southeast-1", "eu-west-1", "us-east-1"];

pub fn endpoint() -> String {
    std::env::var("TSPROV_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// Fails (never skips) when LocalStack is not there.
pub fn require_localstack() {
    let url = endpoint();
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    let addr = hostport
        .parse()
        .unwrap_or_else(|_| panic!("TSPROV_TEST_ENDPOINT={url} is not host:port"));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("LocalStack is not reachable at {url}: start it with localstack/start.sh (scripts/test.sh does this for you)");
    }
}

/// A stack name no other test (or earlier run) uses.
pub fn unique_stack(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("{prefix}-{t}-{}", N.fetch_add(1, Ordering::Relaxed))
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "tsprov failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

/// Runs `tsprov <command> <plan> --stack <stack> --endpoint-url <localstack> <extra...>`.
pub fn tsprov(command: &str, plan: &str, stack: &str, extra: &[&str]) -> Run {
    tsprov_env(command, plan, stack, extra, &[])
}

/// `tsprov` with extra environment variables.
pub fn tsprov_env(
    command: &str,
    plan: &str,
    stack: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    tsprov_via(&endpoint(), command, plan, stack, extra, env)
}

/// The tsprov binary with LocalStack's credentials and default region.
pub fn tsprov_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tsprov"));
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
    c
}

/// `tsprov` through another endpoint (a test proxy).
pub fn tsprov_via(
    endpoint: &str,
    command: &str,
    plan: &str,
    stack: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let out: Output = tsprov_command()
        .arg(command)
        .arg(plan)
        .args(if stack.is_empty() {
            vec![]
        } else {
            vec!["--stack", stack]
        })
        .args(["--endpoint-url", endpoint])
        .args(extra)
        .env("TSPROV_DEPENDENCY_TIMEOUT", "30")
        .envs(env.iter().copied())
        .output()
        .expect("run tsprov");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// The network layer of the reference plan alone (everything before the IAM roles),
/// with the flow-log control waived: flow logs belong to the platform part.
pub fn network_plan_text() -> String {
    let full = std::fs::read_to_string("plans/taskstream.toml").unwrap();
    let end = full
        .find("# --- IAM roles")
        .expect("the reference plan has an IAM section");
    full[..end].replace(
        "[vpc.main]\n",
        "[vpc.main]\nsoc2_exceptions = { flow-logs = \"network-only test stack: flow logs are tested with the platform\" }\n",
    )
}

/// What a destroy of the reference plan must allow: every data-holding resource.
pub const ALLOW_DATA_LOSS: &[&str] = &[
    "--allow-destroy",
    "kms_key.main",
    "--allow-destroy",
    "rds_cluster.main",
    "--allow-destroy",
    "s3_bucket.data_lake",
    "--allow-destroy",
    "s3_bucket.artifacts",
];

/// Writes a variant of a plan file to a temporary path.
pub fn write_plan(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path: PathBuf = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn sdk(region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}

pub async fn ec2(region: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk(region).await)
}

pub async fn kms(region: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&sdk(region).await)
}

pub async fn iam(region: &str) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(&sdk(region).await)
}

pub async fn logs(region: &str) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(&sdk(region).await)
}

pub async fn eks(region: &str) -> aws_sdk_eks::Client {
    aws_sdk_eks::Client::new(&sdk(region).await)
}

pub async fn rds(region: &str) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::new(&sdk(region).await)
}

pub async fn elasticache(region: &str) -> aws_sdk_elasticache::Client {
    aws_sdk_elasticache::Client::new(&sdk(region).await)
}

pub async fn s3(region: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&sdk(region).await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub fn stack_filter(stack: &str) -> Filter {
    Filter::builder()
        .name("tag:tsprov:stack")
        .values(stack)
        .build()
}

pub fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Everything still tagged with the stack in a region, as "kind id" strings (KMS: live aliases).
pub async fn leftovers(region: &str, stack: &str) -> Vec<String> {
    let ec2 = ec2(region).await;
    let f = stack_filter(stack);
    let mut out = Vec::new();
    let vpcs = ec2.describe_vpcs().filters(f.clone()).send().await.unwrap();
    out.extend(
        vpcs.vpcs()
            .iter()
            .map(|v| format!("vpc {}", v.vpc_id().unwrap())),
    );
    let subnets = ec2
        .describe_subnets()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        subnets
            .subnets()
            .iter()
            .map(|s| format!("subnet {}", s.subnet_id().unwrap())),
    );
    let igws = ec2
        .describe_internet_gateways()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        igws.internet_gateways()
            .iter()
            .map(|g| format!("igw {}", g.internet_gateway_id().unwrap())),
    );
    let eips = ec2
        .describe_addresses()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        eips.addresses()
            .iter()
            .map(|a| format!("eip {}", a.allocation_id().unwrap())),
    );
    let nats = ec2
        .describe_nat_gateways()
        .filter(f.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        nats.nat_gateways()
            .iter()
            .filter(|n| {
                !matches!(
                    n.state(),
                    Some(
                        aws_sdk_ec2::types::NatGatewayState::Deleted
                            | aws_sdk_ec2::types::NatGatewayState::Deleting
                    )
                )
            })
            .map(|n| format!("nat {}", n.nat_gateway_id().unwrap())),
    );
    let rts = ec2
        .describe_route_tables()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        rts.route_tables()
            .iter()
            .map(|r| format!("route_table {}", r.route_table_id().unwrap())),
    );
    let sgs = ec2
        .describe_security_groups()
        .filters(f)
        .send()
        .await
        .unwrap();
    out.extend(
        sgs.security_groups()
            .iter()
            .map(|g| format!("sg {}", g.group_id().unwrap())),
    );
    let flow_logs = ec2
        .describe_flow_logs()
        .filter(stack_filter(stack))
        .send()
        .await
        .unwrap();
    out.extend(
        flow_logs
            .flow_logs()
            .iter()
            .map(|f| format!("flow_log {}", f.flow_log_id().unwrap())),
    );
    let roles = iam(region)
        .await
        .list_roles()
        .path_prefix(format!("/tsprov/{stack}/{region}/"))
        .send()
        .await
        .unwrap();
    out.extend(
        roles
            .roles()
            .iter()
            .map(|r| format!("iam_role {}", r.role_name())),
    );
    let groups = logs(region)
        .await
        .describe_log_groups()
        .log_group_name_prefix(format!("/tsprov/{stack}/"))
        .send()
        .await
        .unwrap();
    out.extend(
        groups
            .log_groups()
            .iter()
            .map(|g| format!("log_group {}", g.log_group_name().unwrap())),
    );
    let prefix = format!("{stack}-");
    let clusters = eks(region).await.list_clusters().send().await.unwrap();
    out.extend(
        clusters
            .clusters()
            .iter()
            .filter(|c| c.starts_with(&prefix))
            .map(|c| format!("eks_cluster {c}")),
    );
    let rds = rds(region).await;
    let dbs = rds.describe_db_clusters().send().await.unwrap();
    out.extend(
        dbs.db_clusters()
            .iter()
            .filter_map(|c| c.db_cluster_identifier())
            .filter(|c| c.starts_with(&prefix))
            .map(|c| format!("rds_cluster {c}")),
    );
    let instances = rds.describe_db_instances().send().await.unwrap();
    out.extend(
        instances
            .db_instances()
            .iter()
            .filter_map(|i| i.db_instance_identifier())
            .filter(|i| i.starts_with(&prefix))
            .map(|i| format!("rds_instance {i}")),
    );
    let subnet_groups = rds.describe_db_subnet_groups().send().await.unwrap();
    out.extend(
        subnet_groups
            .db_subnet_groups()
            .iter()
            .filter_map(|g| g.db_subnet_group_name())
            .filter(|g| g.starts_with(&prefix))
            .map(|g| format!("db_subnet_group {g}")),
    );
    let cache = elasticache(region).await;
    let rgs = cache.describe_replication_groups().send().await.unwrap();
    out.extend(
        rgs.replication_groups()
            .iter()
            .filter_map(|g| g.replication_group_id())
            .filter(|g| g.starts_with(&prefix))
            .map(|g| format!("replication_group {g}")),
    );
    let csgs = cache.describe_cache_subnet_groups().send().await.unwrap();
    out.extend(
        csgs.cache_subnet_groups()
            .iter()
            .filter_map(|g| g.cache_subnet_group_name())
            .filter(|g| g.starts_with(&prefix))
            .map(|g| format!("cache_subnet_group {g}")),
    );
    let buckets = s3(region).await.list_buckets().send().await.unwrap();
    let bucket_prefix = format!("{stack}-{region}-");
    out.extend(
        buckets
            .buckets()
            .iter()
            .filter_map(|b| b.name())
            .filter(|b| b.starts_with(&bucket_prefix))
            .map(|b| format!("s3_bucket {b}")),
    );
    let aliases = kms(region).await.list_aliases().send().await.unwrap();
    out.extend(
        aliases
            .aliases()
            .iter()
            .filter(|a| {
                a.alias_name()
                    .unwrap_or("")
                    .starts_with(&format!("alias/{stack}/"))
            })
            .map(|a| format!("kms alias {}", a.alias_name().unwrap())),
    );
    out
}

/// The `tsprov:address` tag of every resource of the stack in a region, one entry per
/// AWS resource (so a duplicate shows twice), sorted. Read with the SDK's own calls;
/// KMS keys pending deletion, NAT gateways deleted and resources being deleted do not count.
pub async fn tagged_addresses(region: &str, stack: &str) -> Vec<String> {
    const ADDRESS: &str = "tsprov:address";
    let mut out: Vec<String> = Vec::new();
    let ec2 = ec2(region).await;
    let f = stack_filter(stack);
    let mut add = |tags: &[aws_sdk_ec2::types::Tag]| {
        if let Some(a) = tag(tags, ADDRESS) {
            out.push(a.to_string());
        }
    };
    for v in ec2
        .describe_vpcs()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .vpcs()
    {
        add(v.tags());
    }
    for s in ec2
        .describe_subnets()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .subnets()
    {
        add(s.tags());
    }
    for g in ec2
        .describe_internet_gateways()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .internet_gateways()
    {
        add(g.tags());
    }
    for a in ec2
        .describe_addresses()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .addresses()
    {
        add(a.tags());
    }
    for n in ec2
        .describe_nat_gateways()
        .filter(f.clone())
        .send()
        .await
        .unwrap()
        .nat_gateways()
    {
        use aws_sdk_ec2::types::NatGatewayState::{Deleted, Deleting};
        if !matches!(n.state(), Some(Deleted | Deleting)) {
            add(n.tags());
        }
    }
    for r in ec2
        .describe_route_tables()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .route_tables()
    {
        add(r.tags());
    }
    for g in ec2
        .describe_security_groups()
        .filters(f.clone())
        .send()
        .await
        .unwrap()
        .security_groups()
    {
        add(g.tags());
    }
    for l in ec2
        .describe_flow_logs()
        .filter(f)
        .send()
        .await
        .unwrap()
        .flow_logs()
    {
        add(l.tags());
    }
    let mut found = |tags: Vec<(String, String)>| {
        if tags.iter().any(|(k, v)| k == "tsprov:stack" && v == stack) {
            if let Some((_, a)) = tags.iter().find(|(k, _)| k == ADDRESS) {
                out.push(a.clone());
            }
        }
    };
    let kms = kms(region).await;
    let keys = kms.list_keys().limit(1000).send().await.unwrap();
    for k in keys.keys() {
        let id = k.key_id().unwrap();
        let meta = kms.describe_key().key_id(id).send().await.unwrap();
        if meta.key_metadata().unwrap().key_state()
            == Some(&aws_sdk_kms::types::KeyState::PendingDeletion)
        {
            continue;
        }
        let tags = kms.list_resource_tags().key_id(id).send().await.unwrap();
        found(
            tags.tags()
                .iter()
                .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
                .collect(),
        );
    }
    let iam = iam(region).await;
    let roles = iam
        .list_roles()
        .path_prefix(format!("/tsprov/{stack}/{region}/"))
        .send()
        .await
        .unwrap();
    for r in roles.roles() {
        let tags = iam
            .list_role_tags()
            .role_name(r.role_name())
            .send()
            .await
            .unwrap();
        found(
            tags.tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
        );
    }
    let logs = logs(region).await;
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix(format!("/tsprov/{stack}/"))
        .send()
        .await
        .unwrap();
    for g in groups.log_groups() {
        let arn = g.arn().unwrap().trim_end_matches(":*");
        let tags = logs
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .unwrap();
        found(
            tags.tags()
                .unwrap_or(&Default::default())
                .clone()
                .into_iter()
                .collect(),
        );
    }
    let eks = eks(region).await;
    let prefix = format!("{stack}-");
    for name in eks.list_clusters().send().await.unwrap().clusters() {
        if !name.starts_with(&prefix) {
            continue;
        }
        let c = eks.describe_cluster().name(name).send().await.unwrap();
        let c = c.cluster().unwrap();
        if c.status() == Some(&aws_sdk_eks::types::ClusterStatus::Deleting) {
            continue;
        }
        found(c.tags().cloned().unwrap_or_default().into_iter().collect());
        let groups = eks
            .list_nodegroups()
            .cluster_name(name)
            .send()
            .await
            .unwrap();
        for g in groups.nodegroups() {
            let n = eks
                .describe_nodegroup()
                .cluster_name(name)
                .nodegroup_name(g)
                .send()
                .await
                .unwrap();
            found(
                n.nodegroup()
                    .and_then(|n| n.tags())
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            );
        }
    }
    let rds = rds(region).await;
    let rds_tags = |list: &[aws_sdk_rds::types::Tag]| -> Vec<(String, String)> {
        list.iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    for c in rds
        .describe_db_clusters()
        .send()
        .await
        .unwrap()
        .db_clusters()
    {
        if c.status() != Some("deleting") {
            found(rds_tags(c.tag_list()));
        }
    }
    for i in rds
        .describe_db_instances()
        .send()
        .await
        .unwrap()
        .db_instances()
    {
        if i.db_instance_status() != Some("deleting") {
            found(rds_tags(i.tag_list()));
        }
    }
    for g in rds
        .describe_db_subnet_groups()
        .send()
        .await
        .unwrap()
        .db_subnet_groups()
    {
        if !g.db_subnet_group_name().unwrap_or("").starts_with(&prefix) {
            continue;
        }
        let tags = rds
            .list_tags_for_resource()
            .resource_name(g.db_subnet_group_arn().unwrap())
            .send()
            .await
            .unwrap();
        found(rds_tags(tags.tag_list()));
    }
    let cache = elasticache(region).await;
    let cache_tags = |list: &[aws_sdk_elasticache::types::Tag]| -> Vec<(String, String)> {
        list.iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let mut arns = Vec::new();
    for g in cache
        .describe_replication_groups()
        .send()
        .await
        .unwrap()
        .replication_groups()
    {
        if g.replication_group_id().unwrap_or("").starts_with(&prefix)
            && g.status() != Some("deleting")
        {
            arns.push(g.arn().unwrap().to_string());
        }
    }
    for g in cache
        .describe_cache_subnet_groups()
        .send()
        .await
        .unwrap()
        .cache_subnet_groups()
    {
        if g.cache_subnet_group_name()
            .unwrap_or("")
            .starts_with(&prefix)
        {
            arns.push(g.arn().unwrap().to_string());
        }
    }
    for arn in arns {
        let tags = cache
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .unwrap();
        found(cache_tags(tags.tag_list()));
    }
    let s3 = s3(region).await;
    let bucket_prefix = format!("{stack}-{region}-");
    for b in s3.list_buckets().send().await.unwrap().buckets() {
        let name = b.name().unwrap();
        if !name.starts_with(&bucket_prefix) {
            continue;
        }
        let tags = s3.get_bucket_tagging().bucket(name).send().await;
        found(
            tags.map(|t| {
                t.tag_set()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect()
            })
            .unwrap_or_else(|_| {
                vec![
                    ("tsprov:stack".into(), stack.into()),
                    (ADDRESS.into(), format!("untagged bucket {name}")),
                ]
            }),
        );
    }
    out.sort();
    out
}

/// The addresses a plan (`plan --json` from empty) would create, per region, without the
/// rule sets (they carry no tags of their own).
pub fn planned_addresses(
    plan: &serde_json::Value,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    for region in plan["regions"].as_array().unwrap() {
        let mut addresses: Vec<String> = region["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["action"] == "create")
            .map(|c| c["address"].as_str().unwrap().to_string())
            .filter(|a| !a.starts_with("security_group_rules."))
            .collect();
        addresses.sort();
        out.insert(region["region"].as_str().unwrap().to_string(), addresses);
    }
    out
}

/// Nothing of the stack in any region: by the leftover reads, and by address tags.
pub async fn assert_nothing_left(stack: &str) {
    for region in REGIONS {
        assert_eq!(
            leftovers(region, stack).await,
            Vec::<String>::new(),
            "{region}"
        );
        assert_eq!(
            tagged_addresses(region, stack).await,
            Vec::<String>::new(),
            "{region}"
        );
    }
}
