//! ElastiCache Redis: `cache_subnet_group` and `replication_group`, named
//! `<stack>-<name>`. Describe calls carry no tags: one tag read per resource.
//! The engine version, subnet group and security groups live on the member
//! clusters, not in DescribeReplicationGroups: they are sent on create and
//! marked write-only (a change to them is not seen by plan).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use async_trait::async_trait;
use aws_sdk_elasticache::types::{AutomaticFailoverStatus, MultiAzStatus, Tag};

use super::{strs, Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually, wait_until, Poll};
use crate::model::{Address, Attrs, Value};
use crate::schema::{Default, Field, Ty};

pub struct CacheSubnetGroup;
pub struct ReplicationGroup;

const SUBNET_GROUP_FIELDS: &[Field] = &[
    Field::new(
        "subnets",
        Ty::List(&Ty::Ref(&["subnet"])),
        "the cache's subnets",
    )
    .set(),
    Field::new("description", Ty::Str, "what it is for").default(Default::Str("Managed by tsprov")),
];

const GROUP_FIELDS: &[Field] = &[
    Field::new("description", Ty::Str, "what it is for").default(Default::Str("Managed by tsprov")),
    Field::new("node_type", Ty::Str, "e.g. cache.r7g.large")
        .default(Default::Str("cache.r7g.large")),
    Field::new(
        "num_cache_clusters",
        Ty::Int { min: 1, max: 6 },
        "primary plus replicas",
    )
    .default(Default::Int(2))
    .replace(),
    Field::new(
        "automatic_failover",
        Ty::Bool,
        "promote a replica when the primary fails",
    )
    .default(Default::Bool(true)),
    Field::new("multi_az", Ty::Bool, "replicas in other AZs").default(Default::Bool(true)),
    Field::new("at_rest_encryption", Ty::Bool, "encryption at rest")
        .default(Default::Bool(true))
        .replace(),
    Field::new(
        "transit_encryption",
        Ty::Bool,
        "TLS between clients and nodes",
    )
    .default(Default::Bool(true))
    .replace(),
    Field::new(
        "kms_key",
        Ty::Ref(&["kms_key"]),
        "the key for encryption at rest",
    )
    .default(Default::None)
    .replace(),
    Field::new("engine_version", Ty::Str, "Redis version")
        .default(Default::Str("7.1"))
        .replace()
        .write_only(),
    Field::new(
        "cache_subnet_group",
        Ty::Ref(&["cache_subnet_group"]),
        "where the nodes live",
    )
    .replace()
    .write_only(),
    Field::new(
        "security_groups",
        Ty::List(&Ty::Ref(&["security_group"])),
        "VPC security groups",
    )
    .default(Default::EmptyList)
    .set()
    .replace()
    .write_only(),
];

const WAIT: Duration = Duration::from_secs(60 * 60);

pub fn identifier(stack: &str, address: &Address) -> String {
    let base = format!("{stack}-{}", address.name.replace('_', "-"));
    match address.index {
        Some(i) => format!("{base}-{i}"),
        None => base,
    }
}

fn cache_tags(want: &Desired) -> Vec<Tag> {
    want.tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

async fn read_tags(cx: &Cx, arn: &str) -> Result<BTreeMap<String, String>> {
    let out = cx
        .aws
        .elasticache
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(api("ListTagsForResource"))?;
    Ok(out
        .tag_list()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect())
}

async fn update_tags(cx: &Cx, live: &Live, want: &Desired) -> Result<()> {
    let arn = live
        .handles
        .get("arn")
        .map(String::as_str)
        .unwrap_or_default();
    let (tag_pairs, tag_removed) = super::tag_delta(&live.tags, &want.tags);
    let set: Vec<Tag> = tag_pairs
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    if !set.is_empty() {
        cx.aws
            .elasticache
            .add_tags_to_resource()
            .resource_name(arn)
            .set_tags(Some(set))
            .send()
            .await
            .map_err(api("AddTagsToResource"))?;
    }
    let removed: Vec<String> = tag_removed;
    if !removed.is_empty() {
        cx.aws
            .elasticache
            .remove_tags_from_resource()
            .resource_name(arn)
            .set_tag_keys(Some(removed))
            .send()
            .await
            .map_err(api("RemoveTagsFromResource"))?;
    }
    Ok(())
}

#[async_trait]
impl Kind for CacheSubnetGroup {
    fn name(&self) -> &'static str {
        "cache_subnet_group"
    }
    fn fields(&self) -> &'static [Field] {
        SUBNET_GROUP_FIELDS
    }

    async fn name_taken(
        &self,
        cx: &Cx,
        address: &Address,
    ) -> Result<Option<BTreeMap<String, String>>> {
        match cx
            .aws
            .elasticache
            .describe_cache_subnet_groups()
            .cache_subnet_group_name(identifier(&cx.stack, address))
            .send()
            .await
            .map_err(api("DescribeCacheSubnetGroups"))
        {
            Err(e) if error_code(&e) == Some("CacheSubnetGroupNotFoundFault") => Ok(None),
            Err(e) => Err(e),
            Ok(out) => Ok(Some(
                read_tags(
                    cx,
                    out.cache_subnet_groups()
                        .first()
                        .and_then(|g| g.arn())
                        .unwrap_or_default(),
                )
                .await?,
            )),
        }
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let prefix = format!("{}-", cx.stack);
        let groups = cx
            .aws
            .elasticache
            .describe_cache_subnet_groups()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeCacheSubnetGroups"))?;
        let reads = groups
            .iter()
            .filter(|g| {
                g.cache_subnet_group_name()
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .map(|g| async move {
                let arn = g.arn().unwrap_or_default();
                let tags = read_tags(cx, arn).await?;
                let mut attrs = Attrs::new();
                attrs.insert(
                    "subnets".into(),
                    Value::List(
                        g.subnets()
                            .iter()
                            .filter_map(|s| s.subnet_identifier())
                            .map(Value::str)
                            .collect(),
                    ),
                );
                attrs.insert(
                    "description".into(),
                    Value::str(g.cache_subnet_group_description().unwrap_or_default()),
                );
                let mut live =
                    Live::from_tags(g.cache_subnet_group_name().unwrap_or_default(), tags, attrs);
                if let Some(l) = live.as_mut() {
                    l.handles.insert("arn".into(), arn.to_string());
                }
                Ok::<_, anyhow::Error>(live)
            });
        Ok(super::read_all(reads.collect())
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let name = identifier(&cx.stack, &want.address);
        let out = eventually(|| async {
            cx.aws
                .elasticache
                .create_cache_subnet_group()
                .cache_subnet_group_name(&name)
                .cache_subnet_group_description(want.str("description"))
                .set_subnet_ids(Some(strs(want.attrs.get("subnets"))))
                .set_tags(Some(cache_tags(want)))
                .send()
                .await
                .map_err(api("CreateCacheSubnetGroup"))
        })
        .await?;
        let mut live = Live::from_tags(&name, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address");
        live.handles.insert(
            "arn".into(),
            out.cache_subnet_group()
                .and_then(|g| g.arn())
                .unwrap_or_default()
                .to_string(),
        );
        Ok(live)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        if changed.iter().any(|c| c == "subnets" || c == "description") {
            cx.aws
                .elasticache
                .modify_cache_subnet_group()
                .cache_subnet_group_name(&live.id)
                .cache_subnet_group_description(want.str("description"))
                .set_subnet_ids(Some(strs(want.attrs.get("subnets"))))
                .send()
                .await
                .map_err(api("ModifyCacheSubnetGroup"))?;
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, live, want).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        match cx
            .aws
            .elasticache
            .delete_cache_subnet_group()
            .cache_subnet_group_name(&live.id)
            .send()
            .await
            .map_err(api("DeleteCacheSubnetGroup"))
        {
            Err(e) if error_code(&e) == Some("CacheSubnetGroupNotFoundFault") => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

#[async_trait]
impl Kind for ReplicationGroup {
    fn name(&self) -> &'static str {
        "replication_group"
    }
    fn fields(&self) -> &'static [Field] {
        GROUP_FIELDS
    }

    async fn name_taken(
        &self,
        cx: &Cx,
        address: &Address,
    ) -> Result<Option<BTreeMap<String, String>>> {
        match cx
            .aws
            .elasticache
            .describe_replication_groups()
            .replication_group_id(identifier(&cx.stack, address))
            .send()
            .await
            .map_err(api("DescribeReplicationGroups"))
        {
            Err(e) if error_code(&e) == Some("ReplicationGroupNotFoundFault") => Ok(None),
            Err(e) => Err(e),
            Ok(out) => Ok(Some(
                read_tags(
                    cx,
                    out.replication_groups()
                        .first()
                        .and_then(|g| g.arn())
                        .unwrap_or_default(),
                )
                .await?,
            )),
        }
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let prefix = format!("{}-", cx.stack);
        let groups = cx
            .aws
            .elasticache
            .describe_replication_groups()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeReplicationGroups"))?;
        // A group's subnet group and security groups live on its member clusters: one
        // batched read, so that destroy knows to delete the group before them.
        let clusters = cx
            .aws
            .elasticache
            .describe_cache_clusters()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeCacheClusters"))?;
        let placement = |group: &str| {
            clusters
                .iter()
                .find(|c| c.replication_group_id() == Some(group))
                .map(|c| {
                    let groups: Vec<Value> = c
                        .security_groups()
                        .iter()
                        .filter_map(|g| g.security_group_id())
                        .map(Value::str)
                        .collect();
                    (c.cache_subnet_group_name().map(Value::str), groups)
                })
        };
        let reads = groups
            .iter()
            .filter(|g| {
                g.replication_group_id()
                    .is_some_and(|n| n.starts_with(&prefix))
                    && g.status() != Some("deleting")
            })
            .map(|g| async move {
                let arn = g.arn().unwrap_or_default();
                let tags = read_tags(cx, arn).await?;
                let mut attrs = Attrs::new();
                attrs.insert(
                    "description".into(),
                    Value::str(g.description().unwrap_or_default()),
                );
                attrs.insert(
                    "node_type".into(),
                    Value::str(g.cache_node_type().unwrap_or_default()),
                );
                attrs.insert(
                    "num_cache_clusters".into(),
                    Value::Int(g.member_clusters().len() as i64),
                );
                attrs.insert(
                    "automatic_failover".into(),
                    Value::Bool(matches!(
                        g.automatic_failover(),
                        Some(AutomaticFailoverStatus::Enabled | AutomaticFailoverStatus::Enabling)
                    )),
                );
                attrs.insert(
                    "multi_az".into(),
                    Value::Bool(g.multi_az() == Some(&MultiAzStatus::Enabled)),
                );
                attrs.insert(
                    "at_rest_encryption".into(),
                    Value::Bool(g.at_rest_encryption_enabled().unwrap_or(false)),
                );
                attrs.insert(
                    "transit_encryption".into(),
                    Value::Bool(g.transit_encryption_enabled().unwrap_or(false)),
                );
                if let Some(key) = g.kms_key_id() {
                    attrs.insert("kms_key".into(), Value::str(key));
                }
                if let Some((subnet_group, security_groups)) =
                    placement(g.replication_group_id().unwrap_or_default())
                {
                    if let Some(name) = subnet_group {
                        attrs.insert("cache_subnet_group".into(), name);
                    }
                    attrs.insert("security_groups".into(), Value::List(security_groups));
                }
                let mut live =
                    Live::from_tags(g.replication_group_id().unwrap_or_default(), tags, attrs);
                if let Some(l) = live.as_mut() {
                    l.handles.insert("arn".into(), arn.to_string());
                }
                Ok::<_, anyhow::Error>(live)
            });
        Ok(super::read_all(reads.collect())
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let id = identifier(&cx.stack, &want.address);
        let out = cx
            .aws
            .elasticache
            .create_replication_group()
            .replication_group_id(&id)
            .replication_group_description(want.str("description"))
            .engine("redis")
            .engine_version(want.str("engine_version"))
            .cache_node_type(want.str("node_type"))
            .num_cache_clusters(
                want.attrs
                    .get("num_cache_clusters")
                    .and_then(Value::as_int)
                    .unwrap_or(2) as i32,
            )
            .automatic_failover_enabled(want.bool("automatic_failover"))
            .multi_az_enabled(want.bool("multi_az"))
            .at_rest_encryption_enabled(want.bool("at_rest_encryption"))
            .transit_encryption_enabled(want.bool("transit_encryption"))
            .set_kms_key_id(
                want.attrs
                    .get("kms_key")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
            .cache_subnet_group_name(want.str("cache_subnet_group"))
            .set_security_group_ids(Some(strs(want.attrs.get("security_groups"))))
            .set_tags(Some(cache_tags(want)))
            .send()
            .await
            .map_err(api("CreateReplicationGroup"))?;
        wait_available(cx, &want.address, &id).await?;
        let mut live = Live::from_tags(&id, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address");
        live.handles.insert(
            "arn".into(),
            out.replication_group()
                .and_then(|g| g.arn())
                .unwrap_or_default()
                .to_string(),
        );
        Ok(live)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        let mut call = cx
            .aws
            .elasticache
            .modify_replication_group()
            .replication_group_id(&live.id)
            .apply_immediately(true);
        let mut any = false;
        for field in changed {
            call = match field.as_str() {
                "description" => call.replication_group_description(want.str("description")),
                "node_type" => call.cache_node_type(want.str("node_type")),
                "automatic_failover" => {
                    call.automatic_failover_enabled(want.bool("automatic_failover"))
                }
                "multi_az" => call.multi_az_enabled(want.bool("multi_az")),
                _ => continue,
            };
            any = true;
        }
        if any {
            call.send().await.map_err(api("ModifyReplicationGroup"))?;
            wait_available(cx, &want.address, &live.id).await?;
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, live, want).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        match cx
            .aws
            .elasticache
            .delete_replication_group()
            .replication_group_id(&live.id)
            .send()
            .await
            .map_err(api("DeleteReplicationGroup"))
        {
            Err(e) if error_code(&e) == Some("ReplicationGroupNotFoundFault") => return Ok(()),
            other => {
                other?;
            }
        }
        let what = format!("{} ({}) to be deleted", live.address, live.id);
        wait_until(&what, cx.wait_timeout(WAIT), &cx.progress, || async {
            match cx
                .aws
                .elasticache
                .describe_replication_groups()
                .replication_group_id(&live.id)
                .send()
                .await
                .map_err(api("DescribeReplicationGroups"))
            {
                Err(e) if error_code(&e) == Some("ReplicationGroupNotFoundFault") => Ok(Poll::Done),
                Err(e) => Err(e),
                Ok(out) => Ok(Poll::Pending(
                    out.replication_groups()
                        .first()
                        .and_then(|g| g.status())
                        .unwrap_or("deleting")
                        .to_string(),
                )),
            }
        })
        .await
    }
}

async fn wait_available(cx: &Cx, address: &Address, id: &str) -> Result<()> {
    let what = format!("{address} ({id}) to become available");
    wait_until(&what, cx.wait_timeout(WAIT), &cx.progress, || async {
        let out = cx
            .aws
            .elasticache
            .describe_replication_groups()
            .replication_group_id(id)
            .send()
            .await
            .map_err(api("DescribeReplicationGroups"))?;
        match out.replication_groups().first().and_then(|g| g.status()) {
            Some("available") => Ok(Poll::Done),
            Some("create-failed") => bail!("replication group {id} create-failed"),
            other => Ok(Poll::Pending(other.unwrap_or("creating").to_string())),
        }
    })
    .await
}
