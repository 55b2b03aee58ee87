//! `log_group`: a CloudWatch Logs group named `/tsprov/<stack>/<name>`, with
//! retention and KMS encryption. Found with one paginated DescribeLogGroups by
//! that prefix; tags cost one call per group (no batch read).

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use async_trait::async_trait;

use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually};
use crate::model::{Address, Attrs, Resource, Value};
use crate::plan::source::Diagnostic;
use crate::schema::{Default, Field, Ty};

pub struct LogGroup;

const RETENTION_DAYS: &[i64] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

const FIELDS: &[Field] = &[
    Field::new(
        "retention_days",
        Ty::Int { min: 1, max: 3653 },
        "how long events are kept",
    )
    .default(Default::Int(365)),
    Field::new(
        "kms_key",
        Ty::Ref(&["kms_key"]),
        "the key that encrypts the events",
    )
    .default(Default::None),
];

pub fn group_name(stack: &str, address: &Address) -> String {
    match address.index {
        Some(i) => format!("/tsprov/{stack}/{}-{i}", address.name),
        None => format!("/tsprov/{stack}/{}", address.name),
    }
}

#[async_trait]
impl Kind for LogGroup {
    fn name(&self) -> &'static str {
        "log_group"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn check(&self, r: &Resource, _region: &[Resource], diags: &mut Vec<Diagnostic>) {
        if let Some(days) = r.attrs.get("retention_days").and_then(Value::as_int) {
            if !RETENTION_DAYS.contains(&days) {
                let list: Vec<String> = RETENTION_DAYS.iter().map(i64::to_string).collect();
                diags.push(
                    Diagnostic::new(
                        r.span_of("retention_days"),
                        format!(
                            "{}: CloudWatch Logs cannot keep events {days} days",
                            r.address
                        ),
                    )
                    .help(format!("one of {}", list.join(", "))),
                );
            }
        }
    }

    async fn name_taken(
        &self,
        cx: &Cx,
        address: &Address,
    ) -> Result<Option<BTreeMap<String, String>>> {
        let name = group_name(&cx.stack, address);
        let out = cx
            .aws
            .logs
            .describe_log_groups()
            .log_group_name_prefix(&name)
            .send()
            .await
            .map_err(api("DescribeLogGroups"))?;
        let Some(g) = out
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(name.as_str()))
        else {
            return Ok(None);
        };
        let tags = cx
            .aws
            .logs
            .list_tags_for_resource()
            .resource_arn(arn_of(g.log_group_arn(), g.arn()))
            .send()
            .await
            .map_err(api("ListTagsForResource"))?;
        Ok(Some(
            tags.tags()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        ))
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let prefix = format!("/tsprov/{}/", cx.stack);
        let groups = cx
            .aws
            .logs
            .describe_log_groups()
            .log_group_name_prefix(prefix)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeLogGroups"))?;
        let reads = groups.iter().map(|g| async move {
            let name = g.log_group_name().unwrap_or_default();
            let arn = arn_of(g.log_group_arn(), g.arn());
            let tags = cx
                .aws
                .logs
                .list_tags_for_resource()
                .resource_arn(&arn)
                .send()
                .await
                .map_err(api("ListTagsForResource"))?;
            let tags: BTreeMap<String, String> = tags
                .tags()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            let mut attrs = Attrs::new();
            attrs.insert(
                "retention_days".into(),
                g.retention_in_days()
                    .map(|d| Value::Int(d as i64))
                    .unwrap_or(Value::Int(0)),
            );
            if let Some(key) = g.kms_key_id() {
                attrs.insert("kms_key".into(), Value::str(key));
            }
            let mut live = Live::from_tags(name, tags, attrs);
            if let Some(l) = live.as_mut() {
                l.handles.insert("arn".into(), arn);
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
        let name = group_name(&cx.stack, &want.address);
        let tags: HashMap<String, String> = want
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let kms = want
            .attrs
            .get("kms_key")
            .and_then(Value::as_str)
            .map(str::to_string);
        cx.aws
            .logs
            .create_log_group()
            .log_group_name(&name)
            .set_kms_key_id(kms)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(api("CreateLogGroup"))?;
        set_retention(cx, &name, want).await?;
        let mut live = Live::from_tags(&name, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address");
        let described = cx
            .aws
            .logs
            .describe_log_groups()
            .log_group_name_prefix(&name)
            .send()
            .await
            .map_err(api("DescribeLogGroups"))?;
        if let Some(g) = described
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(name.as_str()))
        {
            live.handles
                .insert("arn".into(), arn_of(g.log_group_arn(), g.arn()));
        }
        Ok(live)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        for field in changed {
            match field.as_str() {
                "retention_days" => set_retention(cx, &live.id, want).await?,
                "kms_key" => match want.attrs.get("kms_key").and_then(Value::as_str) {
                    Some(key) => {
                        cx.aws
                            .logs
                            .associate_kms_key()
                            .log_group_name(&live.id)
                            .kms_key_id(key)
                            .send()
                            .await
                            .map_err(api("AssociateKmsKey"))?;
                    }
                    None => {
                        cx.aws
                            .logs
                            .disassociate_kms_key()
                            .log_group_name(&live.id)
                            .send()
                            .await
                            .map_err(api("DisassociateKmsKey"))?;
                    }
                },
                "tags" => {
                    let arn = live.handles.get("arn").cloned().unwrap_or_default();
                    let (tag_pairs, tag_removed) = super::tag_delta(&live.tags, &want.tags);
                    let set: HashMap<String, String> = tag_pairs
                        .into_iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if !set.is_empty() {
                        cx.aws
                            .logs
                            .tag_resource()
                            .resource_arn(&arn)
                            .set_tags(Some(set))
                            .send()
                            .await
                            .map_err(api("TagResource"))?;
                    }
                    let removed: Vec<String> = tag_removed;
                    if !removed.is_empty() {
                        cx.aws
                            .logs
                            .untag_resource()
                            .resource_arn(&arn)
                            .set_tag_keys(Some(removed))
                            .send()
                            .await
                            .map_err(api("UntagResource"))?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        match cx
            .aws
            .logs
            .delete_log_group()
            .log_group_name(&live.id)
            .send()
            .await
            .map_err(api("DeleteLogGroup"))
        {
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// The group's ARN without the `:*` that the older `arn` field carries.
fn arn_of(log_group_arn: Option<&str>, arn: Option<&str>) -> String {
    log_group_arn
        .or(arn)
        .unwrap_or_default()
        .trim_end_matches(":*")
        .to_string()
}

async fn set_retention(cx: &Cx, name: &str, want: &Desired) -> Result<()> {
    let days = want
        .attrs
        .get("retention_days")
        .and_then(Value::as_int)
        .unwrap_or(365) as i32;
    eventually(|| async {
        cx.aws
            .logs
            .put_retention_policy()
            .log_group_name(name)
            .retention_in_days(days)
            .send()
            .await
            .map_err(api("PutRetentionPolicy"))
    })
    .await?;
    Ok(())
}
