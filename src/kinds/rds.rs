//! Aurora PostgreSQL: `db_subnet_group`, `rds_cluster`, `rds_instance`, named
//! `<stack>-<name>`. DescribeDBClusters and DescribeDBInstances return tags, so
//! each is one paginated read per region; subnet groups need one tag read each.
//! The master password is managed by AWS (Secrets Manager): it never appears in
//! a plan file, a plan or a log. Deleting a cluster takes a final snapshot.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use async_trait::async_trait;
use aws_sdk_rds::types::Tag;

use super::{strs, Cx, Desired, Guard, Kind, Live};
use crate::aws::{api, error_code, eventually, wait_until, Poll};
use crate::model::{Address, Attrs, Resource, Value};
use crate::plan::source::Diagnostic;
use crate::schema::{Default, Field, Ty};

pub struct DbSubnetGroup;
pub struct RdsCluster;
pub struct RdsInstance;

const SUBNET_GROUP_FIELDS: &[Field] = &[
    Field::new(
        "subnets",
        Ty::List(&Ty::Ref(&["subnet"])),
        "the database subnets, in two AZs or more",
    )
    .set(),
    Field::new("description", Ty::Str, "what it is for").default(Default::Str("Managed by tsprov")),
];

const CLUSTER_FIELDS: &[Field] = &[
    Field::new(
        "engine_version",
        Ty::Str,
        "Aurora PostgreSQL version, 14 or later",
    )
    .default(Default::Str("16.4")),
    Field::new(
        "db_subnet_group",
        Ty::Ref(&["db_subnet_group"]),
        "where its instances live",
    )
    .replace(),
    Field::new(
        "security_groups",
        Ty::List(&Ty::Ref(&["security_group"])),
        "VPC security groups",
    )
    .default(Default::EmptyList)
    .set(),
    Field::new("storage_encrypted", Ty::Bool, "encryption at rest")
        .default(Default::Bool(true))
        .replace(),
    Field::new(
        "kms_key",
        Ty::Ref(&["kms_key"]),
        "the key that encrypts storage",
    )
    .default(Default::None)
    .replace(),
    Field::new(
        "backup_retention_days",
        Ty::Int { min: 1, max: 35 },
        "days of automated backups",
    )
    .default(Default::Int(35)),
    Field::new(
        "deletion_protection",
        Ty::Bool,
        "AWS refuses to delete it while on",
    )
    .default(Default::Bool(true)),
    Field::new(
        "master_username",
        Ty::Str,
        "the administrator's name; its password is managed by AWS",
    )
    .default(Default::Str("taskstream_admin"))
    .replace(),
];

const INSTANCE_FIELDS: &[Field] = &[
    Field::new(
        "cluster",
        Ty::Ref(&["rds_cluster"]),
        "the cluster it serves",
    )
    .replace(),
    Field::new("instance_class", Ty::Str, "e.g. db.r6g.large")
        .default(Default::Str("db.r6g.large")),
    Field::new(
        "availability_zone",
        Ty::Str,
        "its AZ; per_az blocks default to theirs",
    )
    .default(Default::Str("${az}"))
    .replace(),
];

const ENGINE: &str = "aurora-postgresql";
const WAIT: Duration = Duration::from_secs(60 * 60);

pub fn identifier(stack: &str, address: &Address) -> String {
    let base = format!("{stack}-{}", address.name.replace('_', "-"));
    match address.index {
        Some(i) => format!("{base}-{i}"),
        None => base,
    }
}

fn tags_of(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn rds_tags(want: &Desired) -> Vec<Tag> {
    want.tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

async fn update_tags(cx: &Cx, arn: &str, live: &Live, want: &Desired) -> Result<()> {
    let (tag_pairs, tag_removed) = super::tag_delta(&live.tags, &want.tags);
    let set: Vec<Tag> = tag_pairs
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    if !set.is_empty() {
        cx.aws
            .rds
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
            .rds
            .remove_tags_from_resource()
            .resource_name(arn)
            .set_tag_keys(Some(removed))
            .send()
            .await
            .map_err(api("RemoveTagsFromResource"))?;
    }
    Ok(())
}

fn arn(live: &Live) -> &str {
    live.handles
        .get("arn")
        .map(String::as_str)
        .unwrap_or_default()
}

#[async_trait]
impl Kind for DbSubnetGroup {
    fn name(&self) -> &'static str {
        "db_subnet_group"
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
            .rds
            .describe_db_subnet_groups()
            .db_subnet_group_name(identifier(&cx.stack, address))
            .send()
            .await
            .map_err(api("DescribeDBSubnetGroups"))
        {
            Err(e) if error_code(&e) == Some("DBSubnetGroupNotFoundFault") => Ok(None),
            Err(e) => Err(e),
            Ok(out) => {
                let arn = out
                    .db_subnet_groups()
                    .first()
                    .and_then(|g| g.db_subnet_group_arn())
                    .unwrap_or_default();
                let tags = cx
                    .aws
                    .rds
                    .list_tags_for_resource()
                    .resource_name(arn)
                    .send()
                    .await
                    .map_err(api("ListTagsForResource"))?;
                Ok(Some(tags_of(tags.tag_list())))
            }
        }
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let prefix = format!("{}-", cx.stack);
        let groups = cx
            .aws
            .rds
            .describe_db_subnet_groups()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeDBSubnetGroups"))?;
        let reads = groups
            .iter()
            .filter(|g| {
                g.db_subnet_group_name()
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .map(|g| async move {
                let arn = g.db_subnet_group_arn().unwrap_or_default();
                let tags = cx
                    .aws
                    .rds
                    .list_tags_for_resource()
                    .resource_name(arn)
                    .send()
                    .await
                    .map_err(api("ListTagsForResource"))?;
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
                    Value::str(g.db_subnet_group_description().unwrap_or_default()),
                );
                let mut live = Live::from_tags(
                    g.db_subnet_group_name().unwrap_or_default(),
                    tags_of(tags.tag_list()),
                    attrs,
                );
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
                .rds
                .create_db_subnet_group()
                .db_subnet_group_name(&name)
                .db_subnet_group_description(want.str("description"))
                .set_subnet_ids(Some(strs(want.attrs.get("subnets"))))
                .set_tags(Some(rds_tags(want)))
                .send()
                .await
                .map_err(api("CreateDBSubnetGroup"))
        })
        .await?;
        let mut live = Live::from_tags(&name, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address");
        live.handles.insert(
            "arn".into(),
            out.db_subnet_group()
                .and_then(|g| g.db_subnet_group_arn())
                .unwrap_or_default()
                .to_string(),
        );
        Ok(live)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        if changed.iter().any(|c| c == "subnets" || c == "description") {
            cx.aws
                .rds
                .modify_db_subnet_group()
                .db_subnet_group_name(&live.id)
                .db_subnet_group_description(want.str("description"))
                .set_subnet_ids(Some(strs(want.attrs.get("subnets"))))
                .send()
                .await
                .map_err(api("ModifyDBSubnetGroup"))?;
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, arn(live), live, want).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        match cx
            .aws
            .rds
            .delete_db_subnet_group()
            .db_subnet_group_name(&live.id)
            .send()
            .await
            .map_err(api("DeleteDBSubnetGroup"))
        {
            Err(e) if error_code(&e) == Some("DBSubnetGroupNotFoundFault") => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

#[async_trait]
impl Kind for RdsCluster {
    fn name(&self) -> &'static str {
        "rds_cluster"
    }
    fn fields(&self) -> &'static [Field] {
        CLUSTER_FIELDS
    }

    fn check(&self, r: &Resource, _region: &[Resource], diags: &mut Vec<Diagnostic>) {
        let version = r
            .attrs
            .get("engine_version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .is_none_or(|m| m < 14)
        {
            diags.push(
                Diagnostic::new(
                    r.span_of("engine_version"),
                    format!(
                        "{}: Aurora PostgreSQL {version:?} is not supported",
                        r.address
                    ),
                )
                .help("use 14 or later, e.g. \"16.4\""),
            );
        }
    }

    fn deletion_guard(&self, live: &Live) -> Option<Guard> {
        if live
            .attrs
            .get("deletion_protection")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Some(Guard::Protected(format!("deletion protection is on for {}: set deletion_protection = false in the plan and apply that first", live.id)));
        }
        Some(Guard::HoldsData(
            "an Aurora cluster: its databases go with it (a final snapshot is taken)".into(),
        ))
    }

    async fn name_taken(
        &self,
        cx: &Cx,
        address: &Address,
    ) -> Result<Option<BTreeMap<String, String>>> {
        match cx
            .aws
            .rds
            .describe_db_clusters()
            .db_cluster_identifier(identifier(&cx.stack, address))
            .send()
            .await
            .map_err(api("DescribeDBClusters"))
        {
            Err(e) if error_code(&e) == Some("DBClusterNotFoundFault") => Ok(None),
            Err(e) => Err(e),
            Ok(out) => Ok(out.db_clusters().first().map(|c| tags_of(c.tag_list()))),
        }
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let clusters = cx
            .aws
            .rds
            .describe_db_clusters()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeDBClusters"))?;
        Ok(clusters
            .iter()
            .filter(|c| c.engine() == Some(ENGINE) && c.status() != Some("deleting"))
            .filter_map(|c| {
                let mut attrs = Attrs::new();
                attrs.insert(
                    "engine_version".into(),
                    Value::str(c.engine_version().unwrap_or_default()),
                );
                attrs.insert(
                    "db_subnet_group".into(),
                    Value::str(c.db_subnet_group().unwrap_or_default()),
                );
                attrs.insert(
                    "security_groups".into(),
                    Value::List(
                        c.vpc_security_groups()
                            .iter()
                            .filter_map(|g| g.vpc_security_group_id())
                            .map(Value::str)
                            .collect(),
                    ),
                );
                attrs.insert(
                    "storage_encrypted".into(),
                    Value::Bool(c.storage_encrypted().unwrap_or(false)),
                );
                if let Some(key) = c.kms_key_id() {
                    attrs.insert("kms_key".into(), Value::str(key));
                }
                attrs.insert(
                    "backup_retention_days".into(),
                    Value::Int(c.backup_retention_period().unwrap_or(0) as i64),
                );
                attrs.insert(
                    "deletion_protection".into(),
                    Value::Bool(c.deletion_protection().unwrap_or(false)),
                );
                attrs.insert(
                    "master_username".into(),
                    Value::str(c.master_username().unwrap_or_default()),
                );
                let mut live = Live::from_tags(
                    c.db_cluster_identifier().unwrap_or_default(),
                    tags_of(c.tag_list()),
                    attrs,
                )?;
                live.handles.insert(
                    "arn".into(),
                    c.db_cluster_arn().unwrap_or_default().to_string(),
                );
                Some(live)
            })
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let id = identifier(&cx.stack, &want.address);
        let kms = want
            .attrs
            .get("kms_key")
            .and_then(Value::as_str)
            .map(str::to_string);
        let out = cx
            .aws
            .rds
            .create_db_cluster()
            .db_cluster_identifier(&id)
            .engine(ENGINE)
            .engine_version(want.str("engine_version"))
            .master_username(want.str("master_username"))
            // AWS keeps the password in Secrets Manager, encrypted with the same key.
            .manage_master_user_password(true)
            .set_master_user_secret_kms_key_id(kms.clone())
            .db_subnet_group_name(want.str("db_subnet_group"))
            .set_vpc_security_group_ids(Some(strs(want.attrs.get("security_groups"))))
            .storage_encrypted(want.bool("storage_encrypted"))
            .set_kms_key_id(kms)
            .backup_retention_period(
                want.attrs
                    .get("backup_retention_days")
                    .and_then(Value::as_int)
                    .unwrap_or(35) as i32,
            )
            .deletion_protection(want.bool("deletion_protection"))
            .set_tags(Some(rds_tags(want)))
            .send()
            .await
            .map_err(api("CreateDBCluster"))?;
        wait_cluster(cx, &want.address, &id).await?;
        let mut live = Live::from_tags(&id, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address");
        live.handles.insert(
            "arn".into(),
            out.db_cluster()
                .and_then(|c| c.db_cluster_arn())
                .unwrap_or_default()
                .to_string(),
        );
        Ok(live)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        let mut call = cx
            .aws
            .rds
            .modify_db_cluster()
            .db_cluster_identifier(&live.id)
            .apply_immediately(true);
        let mut any = false;
        for field in changed {
            match field.as_str() {
                "engine_version" => {
                    call = call
                        .engine_version(want.str("engine_version"))
                        .allow_major_version_upgrade(true);
                    any = true;
                }
                "security_groups" => {
                    call = call
                        .set_vpc_security_group_ids(Some(strs(want.attrs.get("security_groups"))));
                    any = true;
                }
                "backup_retention_days" => {
                    call = call.backup_retention_period(
                        want.attrs
                            .get("backup_retention_days")
                            .and_then(Value::as_int)
                            .unwrap_or(35) as i32,
                    );
                    any = true;
                }
                "deletion_protection" => {
                    call = call.deletion_protection(want.bool("deletion_protection"));
                    any = true;
                }
                _ => {}
            }
        }
        if any {
            call.send().await.map_err(api("ModifyDBCluster"))?;
            wait_cluster(cx, &want.address, &live.id).await?;
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, arn(live), live, want).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let result = cx
            .aws
            .rds
            .delete_db_cluster()
            .db_cluster_identifier(&live.id)
            .skip_final_snapshot(false)
            .final_db_snapshot_identifier(format!("{}-final-{stamp}", live.id))
            .send()
            .await
            .map_err(api("DeleteDBCluster"));
        match result {
            Err(e) if error_code(&e) == Some("DBClusterNotFoundFault") => return Ok(()),
            other => {
                other?;
            }
        }
        let what = format!("{} ({}) to be deleted", live.address, live.id);
        wait_until(&what, cx.wait_timeout(WAIT), &cx.progress, || async {
            match cx
                .aws
                .rds
                .describe_db_clusters()
                .db_cluster_identifier(&live.id)
                .send()
                .await
                .map_err(api("DescribeDBClusters"))
            {
                Err(e) if error_code(&e) == Some("DBClusterNotFoundFault") => Ok(Poll::Done),
                Err(e) => Err(e),
                Ok(out) => Ok(Poll::Pending(
                    out.db_clusters()
                        .first()
                        .and_then(|c| c.status())
                        .unwrap_or("deleting")
                        .to_string(),
                )),
            }
        })
        .await
    }
}

async fn wait_cluster(cx: &Cx, address: &Address, id: &str) -> Result<()> {
    let what = format!("{address} ({id}) to become available");
    wait_until(&what, cx.wait_timeout(WAIT), &cx.progress, || async {
        let out = cx
            .aws
            .rds
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send()
            .await
            .map_err(api("DescribeDBClusters"))?;
        match out.db_clusters().first().and_then(|c| c.status()) {
            Some("available") => Ok(Poll::Done),
            Some(s @ ("failed" | "inaccessible-encryption-credentials")) => {
                bail!("cluster {id} is {s}")
            }
            other => Ok(Poll::Pending(other.unwrap_or("creating").to_string())),
        }
    })
    .await
}

#[async_trait]
impl Kind for RdsInstance {
    fn name(&self) -> &'static str {
        "rds_instance"
    }
    fn fields(&self) -> &'static [Field] {
        INSTANCE_FIELDS
    }

    async fn name_taken(
        &self,
        cx: &Cx,
        address: &Address,
    ) -> Result<Option<BTreeMap<String, String>>> {
        match cx
            .aws
            .rds
            .describe_db_instances()
            .db_instance_identifier(identifier(&cx.stack, address))
            .send()
            .await
            .map_err(api("DescribeDBInstances"))
        {
            Err(e)
                if matches!(
                    error_code(&e),
                    Some("DBInstanceNotFound" | "DBInstanceNotFoundFault")
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
            Ok(out) => Ok(out.db_instances().first().map(|i| tags_of(i.tag_list()))),
        }
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let instances = cx
            .aws
            .rds
            .describe_db_instances()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeDBInstances"))?;
        Ok(instances
            .iter()
            .filter(|i| i.db_instance_status() != Some("deleting"))
            .filter_map(|i| {
                let mut attrs = Attrs::new();
                attrs.insert(
                    "cluster".into(),
                    Value::str(i.db_cluster_identifier().unwrap_or_default()),
                );
                attrs.insert(
                    "instance_class".into(),
                    Value::str(i.db_instance_class().unwrap_or_default()),
                );
                attrs.insert(
                    "availability_zone".into(),
                    Value::str(i.availability_zone().unwrap_or_default()),
                );
                let mut live = Live::from_tags(
                    i.db_instance_identifier().unwrap_or_default(),
                    tags_of(i.tag_list()),
                    attrs,
                )?;
                live.handles.insert(
                    "arn".into(),
                    i.db_instance_arn().unwrap_or_default().to_string(),
                );
                Some(live)
            })
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let id = identifier(&cx.stack, &want.address);
        let out = cx
            .aws
            .rds
            .create_db_instance()
            .db_instance_identifier(&id)
            .db_cluster_identifier(want.str("cluster"))
            .engine(ENGINE)
            .db_instance_class(want.str("instance_class"))
            .availability_zone(want.str("availability_zone"))
            .set_tags(Some(rds_tags(want)))
            .send()
            .await
            .map_err(api("CreateDBInstance"))?;
        wait_instance(cx, &want.address, &id).await?;
        let mut live = Live::from_tags(&id, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address");
        live.handles.insert(
            "arn".into(),
            out.db_instance()
                .and_then(|i| i.db_instance_arn())
                .unwrap_or_default()
                .to_string(),
        );
        Ok(live)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        if changed.iter().any(|c| c == "instance_class") {
            cx.aws
                .rds
                .modify_db_instance()
                .db_instance_identifier(&live.id)
                .db_instance_class(want.str("instance_class"))
                .apply_immediately(true)
                .send()
                .await
                .map_err(api("ModifyDBInstance"))?;
            wait_instance(cx, &want.address, &live.id).await?;
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, arn(live), live, want).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        // Aurora instances hold no data of their own: the cluster's storage does.
        match cx
            .aws
            .rds
            .delete_db_instance()
            .db_instance_identifier(&live.id)
            .skip_final_snapshot(true)
            .send()
            .await
            .map_err(api("DeleteDBInstance"))
        {
            Err(e)
                if error_code(&e) == Some("DBInstanceNotFound")
                    || error_code(&e) == Some("DBInstanceNotFoundFault") =>
            {
                return Ok(())
            }
            other => {
                other?;
            }
        }
        let what = format!("{} ({}) to be deleted", live.address, live.id);
        wait_until(&what, cx.wait_timeout(WAIT), &cx.progress, || async {
            match cx
                .aws
                .rds
                .describe_db_instances()
                .db_instance_identifier(&live.id)
                .send()
                .await
                .map_err(api("DescribeDBInstances"))
            {
                Err(e)
                    if matches!(
                        error_code(&e),
                        Some("DBInstanceNotFound" | "DBInstanceNotFoundFault")
                    ) =>
                {
                    Ok(Poll::Done)
                }
                Err(e) => Err(e),
                Ok(out) => Ok(Poll::Pending(
                    out.db_instances()
                        .first()
                        .and_then(|i| i.db_instance_status())
                        .unwrap_or("deleting")
                        .to_string(),
                )),
            }
        })
        .await
    }
}

async fn wait_instance(cx: &Cx, address: &Address, id: &str) -> Result<()> {
    let what = format!("{address} ({id}) to become available");
    wait_until(&what, cx.wait_timeout(WAIT), &cx.progress, || async {
        let out = cx
            .aws
            .rds
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(api("DescribeDBInstances"))?;
        match out
            .db_instances()
            .first()
            .and_then(|i| i.db_instance_status())
        {
            Some("available") => Ok(Poll::Done),
            Some(s @ ("failed" | "incompatible-parameters" | "storage-full")) => {
                bail!("instance {id} is {s}")
            }
            other => Ok(Poll::Pending(other.unwrap_or("creating").to_string())),
        }
    })
    .await
}
