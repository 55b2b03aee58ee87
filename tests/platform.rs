//! The whole reference platform against LocalStack: IAM, flow logs, EKS and node
//! groups, Aurora, ElastiCache, S3 in three regions; every attribute read back with
//! the SDK's own calls; an in-place update and a replacement per kind; the
//! data-safety refusals; destroy to nothing, IAM included.

mod common;

use std::collections::BTreeMap;

use common::*;

const PLAN: &str = "plans/taskstream.toml";

async fn kms_arn(region: &str, stack: &str) -> String {
    let kms = kms(region).await;
    let aliases = kms.list_aliases().send().await.unwrap();
    let alias = aliases
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some(format!("alias/{stack}/main").as_str()))
        .expect("the stack's key alias");
    let key = kms
        .describe_key()
        .key_id(alias.target_key_id().unwrap())
        .send()
        .await
        .unwrap();
    key.key_metadata().unwrap().arn().unwrap().to_string()
}

async fn subnet_ids(region: &str, stack: &str, prefix: &str) -> Vec<String> {
    let subnets = ec2(region)
        .await
        .describe_subnets()
        .filters(stack_filter(stack))
        .send()
        .await
        .unwrap();
    let mut ids: Vec<String> = subnets
        .subnets()
        .iter()
        .filter(|s| tag(s.tags(), "tsprov:address").is_some_and(|a| a.starts_with(prefix)))
        .map(|s| s.subnet_id().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

async fn check_platform(region: &str, stack: &str) {
    let key = kms_arn(region, stack).await;
    let private = subnet_ids(region, stack, "subnet.private").await;
    let database = subnet_ids(region, stack, "subnet.database").await;

    // IAM: one copy of each role per region, under the stack's path.
    let iam = iam(region).await;
    let roles = iam
        .list_roles()
        .path_prefix(format!("/tsprov/{stack}/{region}/"))
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = roles.roles().iter().map(|r| r.role_name()).collect();
    assert_eq!(names.len(), 3, "{region}: {names:?}");
    let cluster_role = format!("{stack}-{region}-eks_cluster");
    let role = roles
        .roles()
        .iter()
        .find(|r| r.role_name() == cluster_role)
        .unwrap();
    let trust = percent_encoding::percent_decode_str(role.assume_role_policy_document().unwrap())
        .decode_utf8()
        .unwrap()
        .to_string();
    assert!(trust.contains("eks.amazonaws.com"), "{trust}");
    let attached = iam
        .list_attached_role_policies()
        .role_name(&cluster_role)
        .send()
        .await
        .unwrap();
    assert_eq!(
        attached.attached_policies()[0].policy_arn(),
        Some("arn:aws:iam::aws:policy/AmazonEKSClusterPolicy")
    );
    let tags = iam
        .list_role_tags()
        .role_name(&cluster_role)
        .send()
        .await
        .unwrap();
    assert!(tags
        .tags()
        .iter()
        .any(|t| t.key() == "tsprov:stack" && t.value() == stack));
    let inline = iam
        .get_role_policy()
        .role_name(format!("{stack}-{region}-flow_logs"))
        .policy_name("tsprov")
        .send()
        .await
        .unwrap();
    assert!(
        percent_encoding::percent_decode_str(inline.policy_document())
            .decode_utf8()
            .unwrap()
            .contains("logs:PutLogEvents")
    );

    // Flow logs into an encrypted log group.
    let groups = logs(region)
        .await
        .describe_log_groups()
        .log_group_name_prefix(format!("/tsprov/{stack}/flow_logs"))
        .send()
        .await
        .unwrap();
    let group = &groups.log_groups()[0];
    assert_eq!(group.retention_in_days(), Some(365));
    assert_eq!(group.kms_key_id(), Some(key.as_str()));
    let ec2 = ec2(region).await;
    let vpc = ec2
        .describe_vpcs()
        .filters(stack_filter(stack))
        .send()
        .await
        .unwrap()
        .vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let flows = ec2
        .describe_flow_logs()
        .filter(stack_filter(stack))
        .send()
        .await
        .unwrap();
    assert_eq!(flows.flow_logs().len(), 1);
    let flow = &flows.flow_logs()[0];
    assert_eq!(flow.resource_id(), Some(vpc.as_str()));
    assert_eq!(flow.traffic_type().map(|t| t.as_str()), Some("ALL"));
    assert_eq!(flow.log_group_name(), group.log_group_name());

    // EKS: private endpoint, secrets encrypted with the key, all five log types.
    let eks = eks(region).await;
    let name = format!("{stack}-main");
    let cluster = eks.describe_cluster().name(&name).send().await.unwrap();
    let cluster = cluster.cluster().unwrap();
    assert_eq!(cluster.version(), Some("1.31"));
    let vpc_conf = cluster.resources_vpc_config().unwrap();
    assert!(vpc_conf.endpoint_private_access() && !vpc_conf.endpoint_public_access());
    assert_eq!(sorted(vpc_conf.subnet_ids()), private);
    assert_eq!(
        cluster.encryption_config()[0].provider().unwrap().key_arn(),
        Some(key.as_str())
    );
    let mut logged: Vec<&str> = cluster
        .logging()
        .unwrap()
        .cluster_logging()
        .iter()
        .filter(|l| l.enabled() == Some(true))
        .flat_map(|l| l.types().iter().map(|t| t.as_str()))
        .collect();
    logged.sort();
    assert_eq!(
        logged,
        [
            "api",
            "audit",
            "authenticator",
            "controllerManager",
            "scheduler"
        ]
    );
    assert_eq!(
        cluster
            .tags()
            .unwrap()
            .get("tsprov:address")
            .map(String::as_str),
        Some("eks_cluster.main")
    );
    let groups = eks
        .list_nodegroups()
        .cluster_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(sorted(groups.nodegroups()), ["app", "gpu", "system"]);
    let app = eks
        .describe_nodegroup()
        .cluster_name(&name)
        .nodegroup_name("app")
        .send()
        .await
        .unwrap();
    let app = app.nodegroup().unwrap();
    let scaling = app.scaling_config().unwrap();
    assert_eq!(
        (
            scaling.min_size(),
            scaling.desired_size(),
            scaling.max_size()
        ),
        (Some(3), Some(3), Some(12))
    );
    assert_eq!(
        app.labels().unwrap().get("workload").map(String::as_str),
        Some("app")
    );
    let system = eks
        .describe_nodegroup()
        .cluster_name(&name)
        .nodegroup_name("system")
        .send()
        .await
        .unwrap();
    let taint = &system.nodegroup().unwrap().taints()[0];
    assert_eq!(
        (taint.key(), taint.effect().map(|e| e.as_str())),
        (Some("CriticalAddonsOnly"), Some("NO_SCHEDULE"))
    );
    let gpu = eks
        .describe_nodegroup()
        .cluster_name(&name)
        .nodegroup_name("gpu")
        .send()
        .await
        .unwrap();
    assert_eq!(gpu.nodegroup().unwrap().instance_types(), ["g5.xlarge"]);

    // Aurora: encrypted with the key, 35 days of backups, protected, password managed by AWS.
    let rds = rds(region).await;
    let db = rds
        .describe_db_clusters()
        .db_cluster_identifier(&name)
        .send()
        .await
        .unwrap();
    let db = &db.db_clusters()[0];
    assert_eq!(db.engine(), Some("aurora-postgresql"));
    assert_eq!(db.storage_encrypted(), Some(true));
    assert_eq!(db.kms_key_id(), Some(key.as_str()));
    assert_eq!(db.backup_retention_period(), Some(35));
    assert_eq!(db.deletion_protection(), Some(true));
    assert!(
        db.master_user_secret().is_some(),
        "the master password is managed by AWS"
    );
    assert!(db
        .tag_list()
        .iter()
        .any(|t| t.key() == Some("tsprov:stack") && t.value() == Some(stack)));
    let instances = rds.describe_db_instances().send().await.unwrap();
    let mut azs: Vec<&str> = instances
        .db_instances()
        .iter()
        .filter(|i| i.db_cluster_identifier() == Some(name.as_str()))
        .filter_map(|i| i.availability_zone())
        .collect();
    azs.sort();
    assert_eq!(
        azs,
        [
            format!("{region}a"),
            format!("{region}b"),
            format!("{region}c")
        ]
    );
    let subnet_group = rds
        .describe_db_subnet_groups()
        .db_subnet_group_name(&name)
        .send()
        .await
        .unwrap();
    let mut group_subnets: Vec<String> = subnet_group.db_subnet_groups()[0]
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_identifier())
        .map(str::to_string)
        .collect();
    group_subnets.sort();
    assert_eq!(group_subnets, database);

    // ElastiCache: three nodes, multi-AZ with failover, encrypted at rest and in transit.
    let cache = elasticache(region).await;
    let rg = cache
        .describe_replication_groups()
        .replication_group_id(&name)
        .send()
        .await
        .unwrap();
    let rg = &rg.replication_groups()[0];
    assert_eq!(rg.member_clusters().len(), 3);
    assert_eq!(rg.automatic_failover().map(|a| a.as_str()), Some("enabled"));
    assert_eq!(rg.multi_az().map(|m| m.as_str()), Some("enabled"));
    assert_eq!(
        (
            rg.at_rest_encryption_enabled(),
            rg.transit_encryption_enabled()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(rg.kms_key_id(), Some(key.as_str()));

    // S3: SSE-KMS with the key, versioning, all four public-access blocks, tags.
    let s3 = s3(region).await;
    for bucket in [
        format!("{stack}-{region}-data-lake"),
        format!("{stack}-{region}-artifacts"),
    ] {
        let enc = s3
            .get_bucket_encryption()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let rule = enc.server_side_encryption_configuration().unwrap().rules()[0]
            .apply_server_side_encryption_by_default()
            .unwrap()
            .clone();
        assert_eq!(rule.sse_algorithm().as_str(), "aws:kms");
        assert_eq!(rule.kms_master_key_id(), Some(key.as_str()));
        let versioning = s3
            .get_bucket_versioning()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        assert_eq!(versioning.status().map(|s| s.as_str()), Some("Enabled"));
        let block = s3
            .get_public_access_block()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let block = block.public_access_block_configuration().unwrap();
        assert_eq!(
            [
                block.block_public_acls(),
                block.ignore_public_acls(),
                block.block_public_policy(),
                block.restrict_public_buckets()
            ],
            [Some(true); 4]
        );
        let tags = s3
            .get_bucket_tagging()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        assert!(tags
            .tag_set()
            .iter()
            .any(|t| t.key() == "Compliance" && t.value() == "SOC2"));
    }
}

fn actions(plan: &serde_json::Value, region: &str) -> BTreeMap<String, (String, Option<String>)> {
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
                (
                    c["action"].as_str().unwrap().to_string(),
                    c["blocked"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_platform_lifecycle() {
    require_localstack();
    let stack = unique_stack("plat");
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(PLAN).unwrap();

    let applied = tsprov("apply", PLAN, &stack, &["--auto-approve"]).ok();
    assert!(
        applied.stdout.contains("apply complete"),
        "{}",
        applied.stdout
    );
    for region in REGIONS {
        check_platform(region, &stack).await;
    }
    let again = tsprov("plan", PLAN, &stack, &["--detailed-exitcode", "--json"]);
    assert_eq!(again.code, 0, "not converged:\n{}", again.stdout);
    eprintln!(
        "no-change plan of the whole platform: {} API calls",
        again.json()["api_calls"]
    );

    // One in-place update per kind, and a replacement where the kind has a field that forces one.
    let changed = original
        .replace("description = \"TaskStream encryption at rest (${region})\"", "description = \"TaskStream keys (${region})\"")
        .replace("  \"arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly\",\n", "  \"arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly\",\n  \"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore\",\n")
        .replace("retention_days = 365", "retention_days = 400")
        .replace("traffic_type = \"ALL\"\n", "traffic_type = \"ALL\"\ntags = { Evidence = \"SOC2-CC7.2\" }\n")
        .replace("version = \"1.31\"", "version = \"1.32\"")
        .replace("min_size = 3\ndesired_size = 3", "min_size = 3\ndesired_size = 4")
        .replace("instance_types = [\"g5.xlarge\"]", "instance_types = [\"g5.2xlarge\"]")
        .replace("[db_subnet_group.main]\n", "[db_subnet_group.main]\ndescription = \"Aurora subnets\"\n")
        .replace("instance_class = \"db.r6g.large\"", "instance_class = \"db.r6g.xlarge\"")
        .replace("[cache_subnet_group.main]\n", "[cache_subnet_group.main]\ntags = { Tier = \"cache\" }\n")
        .replace("node_type = \"cache.r7g.large\"\nnum_cache_clusters = 3", "node_type = \"cache.r7g.xlarge\"\nnum_cache_clusters = 2")
        .replace("[s3_bucket.artifacts]\n", "[s3_bucket.artifacts]\ntags = { Retention = \"90d\" }\n");
    let changed_plan = write_plan(&dir, "changed.toml", &changed);
    let diff = tsprov(
        "plan",
        &changed_plan,
        &stack,
        &["--json", "--detailed-exitcode"],
    );
    assert_eq!(diff.code, 2, "{}", diff.stderr);
    let diff = diff.json();
    let update = |a: &BTreeMap<String, (String, Option<String>)>, k: &str| {
        assert_eq!(a.get(k).map(|x| x.0.as_str()), Some("update"), "{k}: {a:?}")
    };
    for region in REGIONS {
        let a = actions(&diff, region);
        for k in [
            "kms_key.main",
            "iam_role.eks_nodes",
            "log_group.flow_logs",
            "flow_log.vpc",
            "eks_cluster.main",
            "eks_node_group.app",
            "db_subnet_group.main",
            "cache_subnet_group.main",
            "s3_bucket.artifacts",
        ] {
            update(&a, k);
        }
        for i in 0..3 {
            update(&a, &format!("rds_instance.main[{i}]"));
        }
        assert_eq!(a["eks_node_group.gpu"].0, "replace");
        assert_eq!(a["replication_group.main"].0, "replace");
        assert_eq!(a.len(), 14, "{region}: {a:?}");
    }
    tsprov("apply", &changed_plan, &stack, &["--auto-approve"]).ok();
    let settled = tsprov("plan", &changed_plan, &stack, &["--detailed-exitcode"]);
    assert_eq!(
        settled.code, 0,
        "not converged after the changes:\n{}",
        settled.stdout
    );
    for region in REGIONS {
        let name = format!("{stack}-main");
        let eks = eks(region).await;
        assert_eq!(
            eks.describe_cluster()
                .name(&name)
                .send()
                .await
                .unwrap()
                .cluster()
                .unwrap()
                .version(),
            Some("1.32")
        );
        let gpu = eks
            .describe_nodegroup()
            .cluster_name(&name)
            .nodegroup_name("gpu")
            .send()
            .await
            .unwrap();
        assert_eq!(gpu.nodegroup().unwrap().instance_types(), ["g5.2xlarge"]);
        let app = eks
            .describe_nodegroup()
            .cluster_name(&name)
            .nodegroup_name("app")
            .send()
            .await
            .unwrap();
        assert_eq!(
            app.nodegroup()
                .unwrap()
                .scaling_config()
                .unwrap()
                .desired_size(),
            Some(4)
        );
        let rg = elasticache(region)
            .await
            .describe_replication_groups()
            .replication_group_id(&name)
            .send()
            .await
            .unwrap();
        assert_eq!(rg.replication_groups()[0].member_clusters().len(), 2);
        assert_eq!(
            rg.replication_groups()[0].cache_node_type(),
            Some("cache.r7g.xlarge")
        );
        let groups = logs(region)
            .await
            .describe_log_groups()
            .log_group_name_prefix(format!("/tsprov/{stack}/flow_logs"))
            .send()
            .await
            .unwrap();
        assert_eq!(groups.log_groups()[0].retention_in_days(), Some(400));
        let attached = iam(region)
            .await
            .list_attached_role_policies()
            .role_name(format!("{stack}-{region}-eks_nodes"))
            .send()
            .await
            .unwrap();
        assert_eq!(attached.attached_policies().len(), 4);
    }

    // Data safety: replacing the database is blocked and apply refuses before touching anything.
    let risky = write_plan(
        &dir,
        "risky.toml",
        &changed.replace(
            "backup_retention_days = 35\n",
            "backup_retention_days = 35\nmaster_username = \"root_admin\"\n",
        ),
    );
    let refused = tsprov("apply", &risky, &stack, &["--auto-approve"]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stdout.contains("-/+ rds_cluster.main"),
        "{}",
        refused.stdout
    );
    assert!(
        refused
            .stdout
            .contains("! blocked: deletion protection is on"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stderr.contains("refusing to apply"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        tsprov("plan", &changed_plan, &stack, &["--detailed-exitcode"]).code,
        0,
        "a refused apply changed something"
    );

    // Destroy: refused while the database is protected and data would go without --allow-destroy.
    let refused = tsprov("destroy", &changed_plan, &stack, &["--auto-approve"]);
    assert_eq!(refused.code, 1);
    let blocked = actions(
        &tsprov("plan", &changed_plan, &stack, &["--json"]).json(),
        "eu-west-1",
    );
    assert!(blocked.is_empty());
    assert!(
        refused
            .stdout
            .contains("! blocked: deletion protection is on"),
        "{}",
        refused.stdout
    );
    assert!(
        refused
            .stdout
            .contains("pass --allow-destroy s3_bucket.data_lake"),
        "{}",
        refused.stdout
    );
    let unprotected = write_plan(
        &dir,
        "unprotected.toml",
        &changed.replace("protect_data = true", "protect_data = false"),
    );
    tsprov("apply", &unprotected, &stack, &["--auto-approve"]).ok();
    let mut args = vec!["--auto-approve"];
    args.extend_from_slice(ALLOW_DATA_LOSS);
    tsprov("destroy", &unprotected, &stack, &args).ok();
    for region in REGIONS {
        let left = leftovers(region, &stack).await;
        assert!(left.is_empty(), "{region}: left behind: {left:?}");
    }
}

const SMALL_DATA: &str = r#"
[stack]
name = "small"

[regions.eu-west-1]
azs = ["eu-west-1a", "eu-west-1b"]

[kms_key.main]

[s3_bucket.data_lake]
kms_key = "kms_key.main"

[iam_role.app]
assume_role_policy = { Version = "2012-10-17", Statement = [{ Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" }, Action = "sts:AssumeRole" }] }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_same_named_resource_of_someone_else_is_never_adopted() {
    require_localstack();
    let stack = unique_stack("taken");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(&dir, "small.toml", SMALL_DATA);
    // Someone else's bucket and role carry the names tsprov would choose.
    let bucket = format!("{stack}-eu-west-1-data-lake");
    let s3 = s3("eu-west-1").await;
    s3.create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let iam = iam("eu-west-1").await;
    let role = format!("{stack}-eu-west-1-app");
    iam.create_role()
        .role_name(&role)
        .assume_role_policy_document("{}")
        .send()
        .await
        .unwrap();

    let run = tsprov("apply", &plan, &stack, &["--auto-approve"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("+ s3_bucket.data_lake"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("! blocked: a resource with this name already exists and it carries no tsprov:stack tag"), "{}", run.stdout);
    assert!(run.stdout.contains("2 blocked"), "{}", run.stdout);
    assert!(run.stderr.contains("refusing to apply"), "{}", run.stderr);
    // Untouched: no tags, no encryption added; and nothing else was created.
    assert!(
        s3.get_bucket_tagging()
            .bucket(&bucket)
            .send()
            .await
            .is_err(),
        "the foreign bucket got tags"
    );
    assert!(iam
        .list_role_tags()
        .role_name(&role)
        .send()
        .await
        .unwrap()
        .tags()
        .is_empty());
    assert_eq!(
        leftovers("eu-west-1", &stack).await,
        [format!("s3_bucket {bucket}")],
        "a refused apply created something"
    );

    s3.delete_bucket().bucket(&bucket).send().await.unwrap();
    iam.delete_role().role_name(&role).send().await.unwrap();
    tsprov("apply", &plan, &stack, &["--auto-approve"]).ok();
    tsprov(
        "destroy",
        &plan,
        &stack,
        &[
            "--auto-approve",
            "--allow-destroy",
            "kms_key.main",
            "--allow-destroy",
            "s3_bucket.data_lake",
        ],
    )
    .ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn eks_waiter_reports_progress_times_out_and_the_next_run_adopts_the_cluster() {
    require_localstack();
    let stack = unique_stack("slow-eks");
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[stack]
name = "slow"
[regions.eu-west-1]
azs = ["eu-west-1a", "eu-west-1b"]
[kms_key.main]
[vpc.main]
cidr_block = "10.50.0.0/16"
soc2_exceptions = { flow-logs = "short-lived test VPC with no traffic" }
[subnet.private]
per_az = true
vpc = "vpc.main"
cidr_block = { within = "vpc.main", newbits = 8, netnum = 0 }
[iam_role.eks]
assume_role_policy = { Version = "2012-10-17", Statement = [{ Effect = "Allow", Principal = { Service = "eks.amazonaws.com" }, Action = "sts:AssumeRole" }] }
[eks_cluster.main]
role = "iam_role.eks"
subnets = ["subnet.private"]
kms_key = "kms_key.main"
enabled_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
"#;
    let plan = write_plan(&dir, "eks.toml", text);
    // The proxy keeps every cluster CREATING, as real EKS does for ten minutes or more.
    let hold: proxy::Rewrite = std::sync::Arc::new(|op: &str, body: String| {
        if op.starts_with("GET /clusters/") && body.contains("\"cluster\"") {
            body.replace("\"status\": \"ACTIVE\"", "\"status\": \"CREATING\"")
                .replace("\"status\":\"ACTIVE\"", "\"status\":\"CREATING\"")
        } else {
            body
        }
    });
    let slow = proxy::start(endpoint(), hold).await;
    // 30 min x 0.002 = a 3.6 s timeout; progress every 0.5 s.
    let env = [
        ("TSPROV_WAIT_SCALE", "0.002"),
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
        run.stderr.contains("still waiting for eks_cluster.main"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("to become ACTIVE: CREATING after"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("failed eks_cluster.main: timed out after"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("(timeout 3s)"),
        "the scaled waiter timeout: {}",
        run.stderr
    );

    // Released, the next run finds the cluster by its tags: no second cluster, converged.
    tsprov("apply", &plan, &stack, &["--auto-approve"]).ok();
    let clusters = eks("eu-west-1").await.list_clusters().send().await.unwrap();
    assert_eq!(
        clusters
            .clusters()
            .iter()
            .filter(|c| c.starts_with(&stack))
            .count(),
        1
    );
    assert_eq!(
        tsprov("plan", &plan, &stack, &["--detailed-exitcode"]).code,
        0
    );
    tsprov(
        "destroy",
        &plan,
        &stack,
        &["--auto-approve", "--allow-destroy", "kms_key.main"],
    )
    .ok();
    assert!(leftovers("eu-west-1", &stack).await.is_empty());
}
