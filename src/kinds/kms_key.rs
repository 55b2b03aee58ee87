//! `kms_key`: a customer-managed key with rotation and the alias
//! `alias/<stack>/<name>`. KMS has no tag filter on ListKeys, so keys are found
//! through their aliases (one paginated ListAliases per region); describe,
//! rotation status and tags have no batch call and cost three calls per key.
//! Deleting schedules the key's deletion after a 30-day waiting period.
//!
//! A key whose alias was never made (a crash or a lost answer between CreateKey and
//! CreateAlias) is invisible to that read; a scan of every key's tags finds it. The
//! scan costs a call per key in the account, so it runs only before a create (to adopt
//! such a key instead of making a second) and in destroy (to leave nothing behind).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use async_trait::async_trait;
use aws_sdk_kms::types::{AliasListEntry, KeyState, Tag};

use super::{Cx, Desired, Guard, Kind, Live};
use crate::aws::{api, error_code, eventually};
use crate::model::{Address, Attrs, Value, TAG_STACK};
use crate::schema::{Default, Field, Ty};

pub struct KmsKey;

/// The longest waiting period KMS allows: the most time to notice a mistake.
const DELETION_WINDOW_DAYS: i32 = 30;

const FIELDS: &[Field] = &[
    Field::new("description", Ty::Str, "what the key protects")
        .default(Default::Str("Managed by tsprov")),
    Field::new("enable_key_rotation", Ty::Bool, "yearly automatic rotation")
        .default(Default::Bool(true)),
];

pub fn alias_name(stack: &str, address: &Address) -> String {
    match address.index {
        Some(i) => format!("alias/{stack}/{}-{i}", address.name),
        None => format!("alias/{stack}/{}", address.name),
    }
}

#[async_trait]
impl Kind for KmsKey {
    fn name(&self) -> &'static str {
        "kms_key"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn deletion_guard(&self, _live: &Live) -> Option<Guard> {
        Some(Guard::HoldsData(
            "a KMS key: what it encrypted becomes unreadable once it is deleted".into(),
        ))
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let prefix = format!("alias/{}/", cx.stack);
        let aliases = list_aliases(cx).await?;
        let keys: Vec<(String, String)> = aliases
            .iter()
            .filter(|a| a.alias_name().is_some_and(|n| n.starts_with(&prefix)))
            .filter_map(|a| Some((a.alias_name()?.to_string(), a.target_key_id()?.to_string())))
            .collect();
        let reads = keys.iter().map(|(alias, key_id)| async move {
            let Some(mut live) = read_key(cx, key_id).await? else {
                return Ok(None);
            };
            if live.tags.get(TAG_STACK) != Some(&cx.stack) {
                bail!("{alias} points at KMS key {key_id}, which is not tagged {TAG_STACK}={}: tsprov will not manage or delete a key it did not create; remove the alias or tag the key", cx.stack);
            }
            live.handles.insert("alias".into(), alias.clone());
            Ok(Some(live))
        });
        let mut found: Vec<Live> = super::read_all(reads.collect())
            .await?
            .into_iter()
            .flatten()
            .collect();
        if cx.find_orphans {
            let seen: Vec<String> = found.iter().map(|l| l.id.clone()).collect();
            found.extend(
                orphans(cx, &aliases)
                    .await?
                    .into_iter()
                    .filter(|o| !seen.contains(&o.id)),
            );
        }
        Ok(found)
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let alias = alias_name(&cx.stack, &want.address);
        // A key of this address without its alias: an earlier create that did not finish.
        if let Some(mut orphan) = orphans(cx, &list_aliases(cx).await?)
            .await?
            .into_iter()
            .find(|o| o.address == want.address)
        {
            create_alias(cx, &alias, &orphan.id).await?;
            if orphan.attrs.get("enable_key_rotation") != want.attrs.get("enable_key_rotation") {
                set_rotation(cx, &orphan.id, want.bool("enable_key_rotation")).await?;
            }
            orphan.attrs = want.attrs.clone();
            orphan.handles.insert("alias".into(), alias);
            return Ok(orphan);
        }
        let mut call = cx.aws.kms.create_key().description(want.str("description"));
        for (k, v) in &want.tags {
            call = call.tags(Tag::builder().tag_key(k).tag_value(v).build()?);
        }
        let out = call
            .customize()
            .config_override(crate::aws::kms_once())
            .send()
            .await
            .map_err(api("CreateKey"))?;
        let meta = out
            .key_metadata()
            .ok_or_else(|| anyhow::anyhow!("CreateKey returned no key"))?;
        let key_id = meta.key_id().to_string();
        // The alias is how the key is found again: make it before anything else can fail.
        create_alias(cx, &alias, &key_id).await?;
        if want.bool("enable_key_rotation") {
            set_rotation(cx, &key_id, true).await?;
        }
        let arn = meta.arn().unwrap_or(&key_id);
        let mut live = Live::from_tags(arn, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address");
        live.handles.insert("alias".into(), alias);
        Ok(live)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        for field in changed {
            match field.as_str() {
                "description" => {
                    cx.aws
                        .kms
                        .update_key_description()
                        .key_id(&live.id)
                        .description(want.str("description"))
                        .send()
                        .await
                        .map_err(api("UpdateKeyDescription"))?;
                }
                "enable_key_rotation" => {
                    set_rotation(cx, &live.id, want.bool("enable_key_rotation")).await?
                }
                "tags" => {
                    let (tag_pairs, tag_removed) = super::tag_delta(&live.tags, &want.tags);
                    let set: Vec<Tag> = tag_pairs
                        .into_iter()
                        .map(|(k, v)| Tag::builder().tag_key(k).tag_value(v).build())
                        .collect::<Result<_, _>>()?;
                    if !set.is_empty() {
                        cx.aws
                            .kms
                            .tag_resource()
                            .key_id(&live.id)
                            .set_tags(Some(set))
                            .send()
                            .await
                            .map_err(api("TagResource"))?;
                    }
                    let removed: Vec<String> = tag_removed;
                    if !removed.is_empty() {
                        cx.aws
                            .kms
                            .untag_resource()
                            .key_id(&live.id)
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
        if let Some(alias) = live.handles.get("alias") {
            match cx
                .aws
                .kms
                .delete_alias()
                .alias_name(alias)
                .send()
                .await
                .map_err(api("DeleteAlias"))
            {
                Err(e) if error_code(&e) == Some("NotFoundException") => {}
                other => {
                    other?;
                }
            }
        }
        match cx
            .aws
            .kms
            .schedule_key_deletion()
            .key_id(&live.id)
            .pending_window_in_days(DELETION_WINDOW_DAYS)
            .send()
            .await
            .map_err(api("ScheduleKeyDeletion"))
        {
            Err(e)
                if matches!(
                    error_code(&e),
                    Some("NotFoundException" | "KMSInvalidStateException")
                ) =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
}

async fn create_alias(cx: &Cx, alias: &str, key_id: &str) -> Result<()> {
    eventually(|| async {
        cx.aws
            .kms
            .create_alias()
            .alias_name(alias)
            .target_key_id(key_id)
            .send()
            .await
            .map_err(api("CreateAlias"))
    })
    .await?;
    Ok(())
}

/// A key's description, rotation and tags; `None` once its deletion is scheduled.
async fn read_key(cx: &Cx, key_id: &str) -> Result<Option<Live>> {
    let (meta, rotation, tags) = tokio::try_join!(
        async {
            cx.aws
                .kms
                .describe_key()
                .key_id(key_id)
                .send()
                .await
                .map_err(api("DescribeKey"))
        },
        async {
            cx.aws
                .kms
                .get_key_rotation_status()
                .key_id(key_id)
                .send()
                .await
                .map_err(api("GetKeyRotationStatus"))
        },
        async {
            cx.aws
                .kms
                .list_resource_tags()
                .key_id(key_id)
                .send()
                .await
                .map_err(api("ListResourceTags"))
        },
    )?;
    let meta = meta.key_metadata().cloned().unwrap_or_else(|| {
        aws_sdk_kms::types::KeyMetadata::builder()
            .key_id(key_id)
            .build()
            .unwrap()
    });
    if meta.key_state() == Some(&KeyState::PendingDeletion) {
        return Ok(None);
    }
    let tags: BTreeMap<String, String> = tags
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect();
    let mut attrs = Attrs::new();
    attrs.insert(
        "description".into(),
        Value::str(meta.description().unwrap_or_default()),
    );
    attrs.insert(
        "enable_key_rotation".into(),
        Value::Bool(rotation.key_rotation_enabled()),
    );
    // The ARN is the id: what logs, EKS, RDS, ElastiCache and S3 need to refer to it.
    Ok(Live::from_tags(meta.arn().unwrap_or(key_id), tags, attrs))
}

async fn list_aliases(cx: &Cx) -> Result<Vec<AliasListEntry>> {
    cx.aws
        .kms
        .list_aliases()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(api("ListAliases"))
}

/// The stack's keys that none of `aliases` points at: every key's tags read (no tag
/// filter exists).
async fn orphans(cx: &Cx, aliases: &[AliasListEntry]) -> Result<Vec<Live>> {
    let keys = cx
        .aws
        .kms
        .list_keys()
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(api("ListKeys"))?;
    let reads = keys
        .iter()
        .filter_map(|k| k.key_id())
        .filter(|id| !aliases.iter().any(|a| a.target_key_id() == Some(*id)))
        .map(|key_id| async move {
            let tags = cx
                .aws
                .kms
                .list_resource_tags()
                .key_id(key_id)
                .send()
                .await
                .map_err(api("ListResourceTags"))?;
            let ours = tags
                .tags()
                .iter()
                .any(|t| t.tag_key() == TAG_STACK && t.tag_value() == cx.stack);
            if !ours {
                return Ok(None);
            }
            read_key(cx, key_id).await
        });
    Ok(super::read_all(reads.collect())
        .await?
        .into_iter()
        .flatten()
        .collect())
}

async fn set_rotation(cx: &Cx, key_id: &str, on: bool) -> Result<()> {
    eventually(|| async {
        if on {
            cx.aws
                .kms
                .enable_key_rotation()
                .key_id(key_id)
                .send()
                .await
                .map_err(api("EnableKeyRotation"))
                .map(|_| ())
        } else {
            cx.aws
                .kms
                .disable_key_rotation()
                .key_id(key_id)
                .send()
                .await
                .map_err(api("DisableKeyRotation"))
                .map(|_| ())
        }
    })
    .await
}
