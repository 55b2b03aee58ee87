//! `eks_cluster` and `eks_node_group`. Clusters are named `<stack>-<name>`; one
//! ListClusters per region finds them, then DescribeCluster, ListNodegroups and
//! DescribeNodegroup per cluster and group (EKS has no batch read). The cluster's
//! discovery reads its node groups too. EKS runs one update at a time per
//! cluster: updates are issued one after the other, each waited for, and an
//! update refused with ResourceInUseException waits its turn.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use async_trait::async_trait;
use aws_sdk_eks::types::{
    AmiTypes, CapacityTypes, ClusterStatus, EncryptionConfig, LogSetup, LogType, Logging,
    NodegroupScalingConfig, NodegroupStatus, Provider, Taint, TaintEffect, UpdateLabelsPayload,
    UpdateStatus, UpdateTaintsPayload, VpcConfigRequest,
};

use super::{strs, Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, wait_until, Poll};
use crate::model::{Address, Attrs, Resource, Value};
use crate::plan::read::fnv;
use crate::plan::source::Diagnostic;
use crate::schema::{Default, Field, Ty};

pub struct EksCluster;
pub struct EksNodeGroup;

pub const LOG_TYPES: &[&str] = &[
    "api",
    "audit",
    "authenticator",
    "controllerManager",
    "scheduler",
];

const CLUSTER_FIELDS: &[Field] = &[
    Field::new("version", Ty::Str, "Kubernetes version, 1.27 or later")
        .default(Default::Str("1.31")),
    Field::new("role", Ty::Ref(&["iam_role"]), "the cluster's service role").replace(),
    Field::new(
        "subnets",
        Ty::List(&Ty::Ref(&["subnet"])),
        "subnets of the control plane's network interfaces",
    )
    .set()
    .replace(),
    Field::new(
        "security_groups",
        Ty::List(&Ty::Ref(&["security_group"])),
        "extra security groups",
    )
    .default(Default::EmptyList)
    .set()
    .replace(),
    Field::new(
        "endpoint_private_access",
        Ty::Bool,
        "API server reachable inside the VPC",
    )
    .default(Default::Bool(true)),
    Field::new(
        "endpoint_public_access",
        Ty::Bool,
        "API server reachable from the internet",
    )
    .default(Default::Bool(false)),
    Field::new(
        "public_access_cidrs",
        Ty::List(&Ty::Cidr),
        "who may reach a public endpoint",
    )
    .default(Default::EmptyList)
    .set(),
    Field::new(
        "kms_key",
        Ty::Ref(&["kms_key"]),
        "envelope encryption of Kubernetes secrets",
    )
    .default(Default::None)
    .replace(),
    Field::new(
        "enabled_log_types",
        Ty::List(&Ty::Enum(LOG_TYPES)),
        "control-plane logs sent to CloudWatch",
    )
    .set(),
];

const TAINT: &[Field] = &[
    Field::new("key", Ty::Str, "taint key"),
    Field::new("value", Ty::Str, "taint value").default(Default::None),
    Field::new(
        "effect",
        Ty::Enum(&["NO_SCHEDULE", "NO_EXECUTE", "PREFER_NO_SCHEDULE"]),
        "what the taint does",
    ),
];

const NODE_GROUP_FIELDS: &[Field] = &[
    Field::new("cluster", Ty::Ref(&["eks_cluster"]), "the cluster it joins").replace(),
    Field::new("role", Ty::Ref(&["iam_role"]), "the nodes' instance role").replace(),
    Field::new(
        "subnets",
        Ty::List(&Ty::Ref(&["subnet"])),
        "where nodes run",
    )
    .set()
    .replace(),
    Field::new("instance_types", Ty::List(&Ty::Str), "EC2 instance types").replace(),
    Field::new(
        "ami_type",
        Ty::Enum(&[
            "AL2023_x86_64_STANDARD",
            "AL2023_x86_64_NVIDIA",
            "AL2023_ARM_64_STANDARD",
            "AL2_x86_64",
            "AL2_x86_64_GPU",
            "AL2_ARM_64",
            "BOTTLEROCKET_x86_64",
            "BOTTLEROCKET_x86_64_NVIDIA",
        ]),
        "node image family",
    )
    .default(Default::Str("AL2023_x86_64_STANDARD"))
    .replace(),
    Field::new(
        "capacity_type",
        Ty::Enum(&["ON_DEMAND", "SPOT"]),
        "on-demand or spot",
    )
    .default(Default::Str("ON_DEMAND"))
    .replace(),
    Field::new(
        "disk_size",
        Ty::Int {
            min: 20,
            max: 16384,
        },
        "root volume GiB",
    )
    .default(Default::Int(50))
    .replace(),
    Field::new("min_size", Ty::Int { min: 0, max: 1000 }, "fewest nodes"),
    Field::new("desired_size", Ty::Int { min: 0, max: 1000 }, "nodes now"),
    Field::new("max_size", Ty::Int { min: 1, max: 1000 }, "most nodes"),
    Field::new("labels", Ty::StrMap, "Kubernetes labels of the nodes").default(Default::None),
    Field::new(
        "taints",
        Ty::List(&Ty::Object(TAINT)),
        "Kubernetes taints of the nodes",
    )
    .default(Default::EmptyList)
    .set(),
];

const CREATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub fn cluster_name(stack: &str, address: &Address) -> String {
    match address.index {
        Some(i) => format!("{stack}-{}-{i}", address.name),
        None => format!("{stack}-{}", address.name),
    }
}

fn node_group_name(address: &Address) -> String {
    match address.index {
        Some(i) => format!("{}-{i}", address.name),
        None => address.name.clone(),
    }
}

fn token(cx: &Cx, address: &Address) -> String {
    format!(
        "tsprov-{:016x}",
        fnv(format!("{}/{}/{address}", cx.stack, cx.region).as_bytes())
    )
}

fn str_list(items: &[String]) -> Value {
    Value::List(items.iter().map(Value::str).collect())
}

fn tags_map(tags: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    tags.map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn logging(enabled: &[String]) -> Logging {
    let (on, off): (Vec<&str>, Vec<&str>) = LOG_TYPES
        .iter()
        .partition(|t| enabled.iter().any(|e| e == *t));
    let mut logging = Logging::builder();
    for (types, flag) in [(on, true), (off, false)] {
        if !types.is_empty() {
            let mut setup = LogSetup::builder().enabled(flag);
            for t in types {
                setup = setup.types(LogType::from(t));
            }
            logging = logging.cluster_logging(setup.build());
        }
    }
    logging.build()
}

fn vpc_access(want: &Desired) -> aws_sdk_eks::types::builders::VpcConfigRequestBuilder {
    let cidrs = strs(want.attrs.get("public_access_cidrs"));
    VpcConfigRequest::builder()
        .endpoint_private_access(want.bool("endpoint_private_access"))
        .endpoint_public_access(want.bool("endpoint_public_access"))
        .set_public_access_cidrs(
            (want.bool("endpoint_public_access") && !cidrs.is_empty()).then_some(cidrs),
        )
}

/// Runs an update call, waiting while EKS is busy with another update of the cluster.
async fn in_turn<T, F, Fut>(cx: &Cx, what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        match call().await {
            // Busy with another update, not "already exists" (a create retried after a lost answer).
            Err(e)
                if error_code(&e) == Some("ResourceInUseException")
                    && !format!("{e:#}").contains("already exists")
                    && start.elapsed() < cx.wait_timeout(UPDATE_TIMEOUT) =>
            {
                cx.progress.line(&format!(
                    "{what}: another update is in progress, waiting for its turn"
                ));
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            other => return other,
        }
    }
}

/// Waits for one EKS update (cluster or node group) to finish.
async fn wait_update(
    cx: &Cx,
    cluster: &str,
    node_group: Option<&str>,
    update_id: &str,
    what: &str,
) -> Result<()> {
    wait_until(
        what,
        cx.wait_timeout(UPDATE_TIMEOUT),
        &cx.progress,
        || async {
            let out = cx
                .aws
                .eks
                .describe_update()
                .name(cluster)
                .set_nodegroup_name(node_group.map(str::to_string))
                .update_id(update_id)
                .send()
                .await
                .map_err(api("DescribeUpdate"))?;
            let update = out
                .update()
                .ok_or_else(|| anyhow::anyhow!("DescribeUpdate returned nothing"))?;
            match update.status() {
                Some(UpdateStatus::Successful) => Ok(Poll::Done),
                Some(UpdateStatus::Failed | UpdateStatus::Cancelled) => {
                    let errors: Vec<String> = update
                        .errors()
                        .iter()
                        .map(|e| e.error_message().unwrap_or_default().to_string())
                        .collect();
                    bail!(
                        "update {update_id} {}: {}",
                        update.status().map(|s| s.as_str()).unwrap_or("failed"),
                        errors.join("; ")
                    )
                }
                other => Ok(Poll::Pending(
                    other
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|| "InProgress".into()),
                )),
            }
        },
    )
    .await
}

async fn update_tags(
    cx: &Cx,
    arn: &str,
    live: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Result<()> {
    let (tag_pairs, tag_removed) = super::tag_delta(live, want);
    let set: HashMap<String, String> = tag_pairs
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !set.is_empty() {
        cx.aws
            .eks
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(set))
            .send()
            .await
            .map_err(api("TagResource"))?;
    }
    let removed: Vec<String> = tag_removed;
    if !removed.is_empty() {
        cx.aws
            .eks
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(removed))
            .send()
            .await
            .map_err(api("UntagResource"))?;
    }
    Ok(())
}

#[async_trait]
impl Kind for EksCluster {
    fn name(&self) -> &'static str {
        "eks_cluster"
    }
    fn fields(&self) -> &'static [Field] {
        CLUSTER_FIELDS
    }

    fn check(&self, r: &Resource, _region: &[Resource], diags: &mut Vec<Diagnostic>) {
        let version = r
            .attrs
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let minor = version
            .strip_prefix("1.")
            .and_then(|m| m.parse::<u32>().ok());
        if minor.is_none_or(|m| m < 27) {
            diags.push(
                Diagnostic::new(
                    r.span_of("version"),
                    format!(
                        "{}: Kubernetes version {version:?} is not supported",
                        r.address
                    ),
                )
                .help("use \"1.27\" or later, e.g. \"1.31\""),
            );
        }
    }

    async fn name_taken(
        &self,
        cx: &Cx,
        address: &Address,
    ) -> Result<Option<BTreeMap<String, String>>> {
        match cx
            .aws
            .eks
            .describe_cluster()
            .name(cluster_name(&cx.stack, address))
            .send()
            .await
            .map_err(api("DescribeCluster"))
        {
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(e),
            Ok(out) => Ok(Some(tags_map(out.cluster().and_then(|c| c.tags())))),
        }
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let prefix = format!("{}-", cx.stack);
        let names = cx
            .aws
            .eks
            .list_clusters()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("ListClusters"))?;
        let reads = names
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .map(|name| read_cluster(cx, name));
        Ok(super::read_all(reads.collect())
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let name = cluster_name(&cx.stack, &want.address);
        let mut vpc = vpc_access(want);
        vpc = vpc
            .set_subnet_ids(Some(strs(want.attrs.get("subnets"))))
            .set_security_group_ids(Some(strs(want.attrs.get("security_groups"))));
        let mut call = cx
            .aws
            .eks
            .create_cluster()
            .name(&name)
            .version(want.str("version"))
            .role_arn(want.str("role"))
            .resources_vpc_config(vpc.build())
            .logging(logging(&strs(want.attrs.get("enabled_log_types"))))
            .set_tags(Some(
                want.tags
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))
            .client_request_token(token(cx, &want.address));
        if let Some(key) = want.attrs.get("kms_key").and_then(Value::as_str) {
            call = call.encryption_config(
                EncryptionConfig::builder()
                    .provider(Provider::builder().key_arn(key).build())
                    .build(),
            );
        }
        match call.send().await.map_err(api("CreateCluster")) {
            // A create retried after a timeout or crash: the cluster of the first attempt.
            Err(e) if error_code(&e) == Some("ResourceInUseException") => {}
            other => {
                other?;
            }
        }
        let what = format!("{} ({name}) to become ACTIVE", want.address);
        wait_until(
            &what,
            cx.wait_timeout(CREATE_TIMEOUT),
            &cx.progress,
            || async {
                let out = cx
                    .aws
                    .eks
                    .describe_cluster()
                    .name(&name)
                    .send()
                    .await
                    .map_err(api("DescribeCluster"))?;
                match out.cluster().and_then(|c| c.status()) {
                    Some(ClusterStatus::Active) => Ok(Poll::Done),
                    Some(ClusterStatus::Failed) => bail!("cluster {name} FAILED"),
                    other => Ok(Poll::Pending(
                        other.map(|s| s.as_str().to_string()).unwrap_or_default(),
                    )),
                }
            },
        )
        .await?;
        read_cluster(cx, &name)
            .await?
            .into_iter()
            .find(|l| l.address == want.address)
            .ok_or_else(|| anyhow::anyhow!("cluster {name} vanished after create"))
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        let name = live.id.as_str();
        let what = |w: &str| format!("{} ({name}) {w}", want.address);
        if changed.iter().any(|c| c == "enabled_log_types") {
            let out = in_turn(cx, &what("logging"), || async {
                cx.aws
                    .eks
                    .update_cluster_config()
                    .name(name)
                    .logging(logging(&strs(want.attrs.get("enabled_log_types"))))
                    .send()
                    .await
                    .map_err(api("UpdateClusterConfig"))
            })
            .await?;
            wait_update(
                cx,
                name,
                None,
                out.update().and_then(|u| u.id()).unwrap_or_default(),
                &what("logging update"),
            )
            .await?;
        }
        if changed.iter().any(|c| {
            [
                "endpoint_private_access",
                "endpoint_public_access",
                "public_access_cidrs",
            ]
            .contains(&c.as_str())
        }) {
            let out = in_turn(cx, &what("endpoint access"), || async {
                cx.aws
                    .eks
                    .update_cluster_config()
                    .name(name)
                    .resources_vpc_config(vpc_access(want).build())
                    .send()
                    .await
                    .map_err(api("UpdateClusterConfig"))
            })
            .await?;
            wait_update(
                cx,
                name,
                None,
                out.update().and_then(|u| u.id()).unwrap_or_default(),
                &what("endpoint update"),
            )
            .await?;
        }
        if changed.iter().any(|c| c == "version") {
            let out = in_turn(cx, &what("version"), || async {
                cx.aws
                    .eks
                    .update_cluster_version()
                    .name(name)
                    .version(want.str("version"))
                    .send()
                    .await
                    .map_err(api("UpdateClusterVersion"))
            })
            .await?;
            wait_update(
                cx,
                name,
                None,
                out.update().and_then(|u| u.id()).unwrap_or_default(),
                &what("version update"),
            )
            .await?;
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(
                cx,
                live.handles
                    .get("arn")
                    .map(String::as_str)
                    .unwrap_or_default(),
                &live.tags,
                &want.tags,
            )
            .await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        let name = live.id.as_str();
        match in_turn(cx, name, || async {
            cx.aws
                .eks
                .delete_cluster()
                .name(name)
                .send()
                .await
                .map_err(api("DeleteCluster"))
        })
        .await
        {
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(()),
            other => {
                other?;
            }
        }
        let what = format!("{} ({name}) to be deleted", live.address);
        wait_until(
            &what,
            cx.wait_timeout(DELETE_TIMEOUT),
            &cx.progress,
            || async {
                match cx
                    .aws
                    .eks
                    .describe_cluster()
                    .name(name)
                    .send()
                    .await
                    .map_err(api("DescribeCluster"))
                {
                    Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(Poll::Done),
                    Err(e) => Err(e),
                    Ok(out) => Ok(Poll::Pending(
                        out.cluster()
                            .and_then(|c| c.status())
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_default(),
                    )),
                }
            },
        )
        .await
    }
}

/// A cluster and its node groups, when the cluster carries the stack's tags.
async fn read_cluster(cx: &Cx, name: &str) -> Result<Vec<Live>> {
    let out = match cx
        .aws
        .eks
        .describe_cluster()
        .name(name)
        .send()
        .await
        .map_err(api("DescribeCluster"))
    {
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(vec![]),
        other => other?,
    };
    let Some(c) = out.cluster() else {
        return Ok(vec![]);
    };
    if c.status() == Some(&ClusterStatus::Deleting) {
        return Ok(vec![]);
    }
    let vpc = c.resources_vpc_config();
    let public = vpc.is_some_and(|v| v.endpoint_public_access());
    let mut attrs = Attrs::new();
    attrs.insert(
        "version".into(),
        Value::str(c.version().unwrap_or_default()),
    );
    attrs.insert("role".into(), Value::str(c.role_arn().unwrap_or_default()));
    attrs.insert(
        "subnets".into(),
        str_list(vpc.map(|v| v.subnet_ids()).unwrap_or_default()),
    );
    attrs.insert(
        "security_groups".into(),
        str_list(vpc.map(|v| v.security_group_ids()).unwrap_or_default()),
    );
    attrs.insert(
        "endpoint_private_access".into(),
        Value::Bool(vpc.is_some_and(|v| v.endpoint_private_access())),
    );
    attrs.insert("endpoint_public_access".into(), Value::Bool(public));
    // Without a public endpoint the allow-list means nothing (AWS reports 0.0.0.0/0 anyway).
    attrs.insert(
        "public_access_cidrs".into(),
        if public {
            str_list(vpc.map(|v| v.public_access_cidrs()).unwrap_or_default())
        } else {
            Value::List(vec![])
        },
    );
    if let Some(key) = c
        .encryption_config()
        .iter()
        .find_map(|e| e.provider().and_then(|p| p.key_arn()))
    {
        attrs.insert("kms_key".into(), Value::str(key));
    }
    let enabled: Vec<Value> = c
        .logging()
        .map(|l| {
            l.cluster_logging()
                .iter()
                .filter(|s| s.enabled() == Some(true))
                .flat_map(|s| s.types().iter().map(|t| Value::str(t.as_str())))
                .collect()
        })
        .unwrap_or_default();
    attrs.insert("enabled_log_types".into(), Value::List(enabled));
    let Some(mut cluster) = Live::from_tags(name, tags_map(c.tags()), attrs) else {
        return Ok(vec![]);
    };
    cluster
        .handles
        .insert("arn".into(), c.arn().unwrap_or_default().to_string());
    let groups = cx
        .aws
        .eks
        .list_nodegroups()
        .cluster_name(name)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(api("ListNodegroups"))?;
    let reads = groups.iter().map(|g| read_node_group(cx, name, g));
    let mut out: Vec<Live> = super::read_all(reads.collect())
        .await?
        .into_iter()
        .flatten()
        .collect();
    out.push(cluster);
    Ok(out)
}

async fn read_node_group(cx: &Cx, cluster: &str, name: &str) -> Result<Option<Live>> {
    let out = match cx
        .aws
        .eks
        .describe_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(name)
        .send()
        .await
        .map_err(api("DescribeNodegroup"))
    {
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(None),
        other => other?,
    };
    let Some(g) = out.nodegroup() else {
        return Ok(None);
    };
    if g.status() == Some(&NodegroupStatus::Deleting) {
        return Ok(None);
    }
    let scaling = g.scaling_config();
    let size = |v: Option<i32>| Value::Int(v.unwrap_or(0) as i64);
    let mut attrs = Attrs::new();
    attrs.insert("cluster".into(), Value::str(cluster));
    attrs.insert("role".into(), Value::str(g.node_role().unwrap_or_default()));
    attrs.insert("subnets".into(), str_list(g.subnets()));
    attrs.insert("instance_types".into(), str_list(g.instance_types()));
    attrs.insert(
        "ami_type".into(),
        Value::str(g.ami_type().map(|a| a.as_str()).unwrap_or_default()),
    );
    attrs.insert(
        "capacity_type".into(),
        Value::str(g.capacity_type().map(|c| c.as_str()).unwrap_or("ON_DEMAND")),
    );
    attrs.insert("disk_size".into(), size(g.disk_size()));
    attrs.insert("min_size".into(), size(scaling.and_then(|s| s.min_size())));
    attrs.insert(
        "desired_size".into(),
        size(scaling.and_then(|s| s.desired_size())),
    );
    attrs.insert("max_size".into(), size(scaling.and_then(|s| s.max_size())));
    attrs.insert(
        "labels".into(),
        Value::Map(
            g.labels()
                .map(|l| l.iter().map(|(k, v)| (k.clone(), Value::str(v))).collect())
                .unwrap_or_default(),
        ),
    );
    let taints = g
        .taints()
        .iter()
        .map(|t| {
            let mut m = BTreeMap::new();
            m.insert("key".to_string(), Value::str(t.key().unwrap_or_default()));
            if let Some(v) = t.value() {
                m.insert("value".to_string(), Value::str(v));
            }
            m.insert(
                "effect".to_string(),
                Value::str(t.effect().map(|e| e.as_str()).unwrap_or_default()),
            );
            Value::Map(m)
        })
        .collect();
    attrs.insert("taints".into(), Value::List(taints));
    let Some(mut live) = Live::from_tags(
        g.nodegroup_arn().unwrap_or_default(),
        tags_map(g.tags()),
        attrs,
    ) else {
        return Ok(None);
    };
    // Read by the cluster's discovery: an untracked one is a node group, not a cluster.
    if live.address.kind == super::UNTRACKED {
        live.address.kind = "eks_node_group".into();
    }
    live.handles.insert("cluster".into(), cluster.to_string());
    live.handles.insert("name".into(), name.to_string());
    Ok(Some(live))
}

fn taint(v: &Value) -> Taint {
    let m = v.as_map().cloned().unwrap_or_default();
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    Taint::builder()
        .set_key(s("key"))
        .set_value(s("value"))
        .set_effect(s("effect").map(|e| TaintEffect::from(e.as_str())))
        .build()
}

fn scaling(want: &Desired) -> NodegroupScalingConfig {
    let n = |k: &str| want.attrs.get(k).and_then(Value::as_int).unwrap_or(0) as i32;
    NodegroupScalingConfig::builder()
        .min_size(n("min_size"))
        .desired_size(n("desired_size"))
        .max_size(n("max_size"))
        .build()
}

#[async_trait]
impl Kind for EksNodeGroup {
    fn name(&self) -> &'static str {
        "eks_node_group"
    }
    fn fields(&self) -> &'static [Field] {
        NODE_GROUP_FIELDS
    }

    fn check(&self, r: &Resource, _region: &[Resource], diags: &mut Vec<Diagnostic>) {
        let n = |k: &str| r.attrs.get(k).and_then(Value::as_int);
        if let (Some(min), Some(desired), Some(max)) =
            (n("min_size"), n("desired_size"), n("max_size"))
        {
            if !(min <= desired && desired <= max) {
                diags.push(Diagnostic::new(r.span_of("desired_size"), format!("{}: sizes must satisfy min <= desired <= max, got {min} <= {desired} <= {max}", r.address)).help("adjust min_size, desired_size or max_size"));
            }
        }
    }

    async fn discover(&self, _cx: &Cx) -> Result<Vec<Live>> {
        // Read with their cluster by EksCluster::discover.
        Ok(Vec::new())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let cluster = want.str("cluster").to_string();
        let name = node_group_name(&want.address);
        let mut call = cx
            .aws
            .eks
            .create_nodegroup()
            .cluster_name(&cluster)
            .nodegroup_name(&name)
            .node_role(want.str("role"))
            .set_subnets(Some(strs(want.attrs.get("subnets"))))
            .set_instance_types(Some(strs(want.attrs.get("instance_types"))))
            .ami_type(AmiTypes::from(want.str("ami_type")))
            .capacity_type(CapacityTypes::from(want.str("capacity_type")))
            .disk_size(
                want.attrs
                    .get("disk_size")
                    .and_then(Value::as_int)
                    .unwrap_or(50) as i32,
            )
            .scaling_config(scaling(want))
            .set_tags(Some(
                want.tags
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))
            .client_request_token(token(cx, &want.address));
        if let Some(labels) = want.attrs.get("labels").and_then(Value::as_map) {
            call = call.set_labels(Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
            ));
        }
        for t in want
            .attrs
            .get("taints")
            .map(Value::as_list)
            .unwrap_or_default()
        {
            call = call.taints(taint(t));
        }
        match in_turn(cx, &name, || async {
            call.clone().send().await.map_err(api("CreateNodegroup"))
        })
        .await
        {
            Err(e) if error_code(&e) == Some("ResourceInUseException") => {}
            other => {
                other?;
            }
        }
        let what = format!("{} ({cluster}/{name}) to become ACTIVE", want.address);
        wait_until(
            &what,
            cx.wait_timeout(CREATE_TIMEOUT),
            &cx.progress,
            || async {
                let out = cx
                    .aws
                    .eks
                    .describe_nodegroup()
                    .cluster_name(&cluster)
                    .nodegroup_name(&name)
                    .send()
                    .await
                    .map_err(api("DescribeNodegroup"))?;
                match out.nodegroup().and_then(|g| g.status()) {
                    Some(NodegroupStatus::Active) => Ok(Poll::Done),
                    Some(NodegroupStatus::CreateFailed) => {
                        bail!("node group {cluster}/{name} CREATE_FAILED")
                    }
                    other => Ok(Poll::Pending(
                        other.map(|s| s.as_str().to_string()).unwrap_or_default(),
                    )),
                }
            },
        )
        .await?;
        read_node_group(cx, &cluster, &name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("node group {cluster}/{name} vanished after create"))
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        let cluster = live.handles.get("cluster").cloned().unwrap_or_default();
        let name = live.handles.get("name").cloned().unwrap_or_default();
        let mut call = cx
            .aws
            .eks
            .update_nodegroup_config()
            .cluster_name(&cluster)
            .nodegroup_name(&name);
        let mut any = false;
        if changed
            .iter()
            .any(|c| ["min_size", "desired_size", "max_size"].contains(&c.as_str()))
        {
            call = call.scaling_config(scaling(want));
            any = true;
        }
        if changed.iter().any(|c| c == "labels") {
            let have = live
                .attrs
                .get("labels")
                .and_then(Value::as_map)
                .cloned()
                .unwrap_or_default();
            let wanted = want
                .attrs
                .get("labels")
                .and_then(Value::as_map)
                .cloned()
                .unwrap_or_default();
            let set: HashMap<String, String> = wanted
                .iter()
                .filter(|(k, v)| have.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let removed: Vec<String> = have
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect();
            call = call.labels(
                UpdateLabelsPayload::builder()
                    .set_add_or_update_labels((!set.is_empty()).then_some(set))
                    .set_remove_labels((!removed.is_empty()).then_some(removed))
                    .build(),
            );
            any = true;
        }
        if changed.iter().any(|c| c == "taints") {
            let have = live
                .attrs
                .get("taints")
                .map(Value::as_list)
                .unwrap_or_default();
            let wanted = want
                .attrs
                .get("taints")
                .map(Value::as_list)
                .unwrap_or_default();
            let add: Vec<Taint> = wanted
                .iter()
                .filter(|t| !have.contains(t))
                .map(taint)
                .collect();
            let remove: Vec<Taint> = have
                .iter()
                .filter(|t| {
                    !wanted.iter().any(|w| {
                        w.as_map().and_then(|m| m.get("key"))
                            == t.as_map().and_then(|m| m.get("key"))
                    })
                })
                .map(taint)
                .collect();
            call = call.taints(
                UpdateTaintsPayload::builder()
                    .set_add_or_update_taints((!add.is_empty()).then_some(add))
                    .set_remove_taints((!remove.is_empty()).then_some(remove))
                    .build(),
            );
            any = true;
        }
        if any {
            let what = format!("{} ({cluster}/{name}) update", want.address);
            let out = in_turn(cx, &what, || async {
                call.clone()
                    .send()
                    .await
                    .map_err(api("UpdateNodegroupConfig"))
            })
            .await?;
            wait_update(
                cx,
                &cluster,
                Some(&name),
                out.update().and_then(|u| u.id()).unwrap_or_default(),
                &what,
            )
            .await?;
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, &live.id, &live.tags, &want.tags).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        let cluster = live.handles.get("cluster").cloned().unwrap_or_default();
        let name = live.handles.get("name").cloned().unwrap_or_default();
        match in_turn(cx, &name, || async {
            cx.aws
                .eks
                .delete_nodegroup()
                .cluster_name(&cluster)
                .nodegroup_name(&name)
                .send()
                .await
                .map_err(api("DeleteNodegroup"))
        })
        .await
        {
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(()),
            other => {
                other?;
            }
        }
        let what = format!("{} ({cluster}/{name}) to be deleted", live.address);
        wait_until(
            &what,
            cx.wait_timeout(DELETE_TIMEOUT),
            &cx.progress,
            || async {
                match cx
                    .aws
                    .eks
                    .describe_nodegroup()
                    .cluster_name(&cluster)
                    .nodegroup_name(&name)
                    .send()
                    .await
                    .map_err(api("DescribeNodegroup"))
                {
                    Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(Poll::Done),
                    Err(e) => Err(e),
                    Ok(out) => Ok(Poll::Pending(
                        out.nodegroup()
                            .and_then(|g| g.status())
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_default(),
                    )),
                }
            },
        )
        .await
    }
}
