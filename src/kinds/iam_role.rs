//! `iam_role`: a role with its trust policy and managed-policy attachments.
//! IAM is global; tsprov keeps one copy of each role per region, named
//! `<stack>-<region>-<name>` under the path `/tsprov/<stack>/<region>/`, so that
//! `--region` only ever touches that region's roles. Found with one paginated
//! ListRoles by path; tags and attachments cost two calls per role (no batch read).

use std::collections::BTreeMap;

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_iam::types::Tag;

use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually};
use crate::model::{Address, Attrs, Value};
use crate::policy::canonical_from_aws;
use crate::schema::{Default, Field, Ty};

pub struct IamRole;

const FIELDS: &[Field] = &[
    Field::new(
        "assume_role_policy",
        Ty::Json,
        "who may assume the role (trust policy)",
    ),
    Field::new(
        "managed_policies",
        Ty::List(&Ty::Str),
        "ARNs of managed policies attached to it",
    )
    .default(Default::EmptyList)
    .set(),
    Field::new(
        "inline_policy",
        Ty::Json,
        "its own permissions (least privilege), kept as the inline policy `tsprov`",
    )
    .default(Default::None),
    Field::new("description", Ty::Str, "what the role is for")
        .default(Default::Str("Managed by tsprov")),
];

/// The name of the one inline policy tsprov manages on a role.
const INLINE: &str = "tsprov";

pub fn path(stack: &str, region: &str) -> String {
    format!("/tsprov/{stack}/{region}/")
}

pub fn role_name(stack: &str, region: &str, address: &Address) -> String {
    let base = format!("{stack}-{region}-{}", address.name);
    match address.index {
        Some(i) => format!("{base}-{i}"),
        None => base,
    }
}

/// The role name is the last part of its ARN.
fn name_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[async_trait]
impl Kind for IamRole {
    fn name(&self) -> &'static str {
        "iam_role"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    async fn name_taken(
        &self,
        cx: &Cx,
        address: &Address,
    ) -> Result<Option<BTreeMap<String, String>>> {
        let name = role_name(&cx.stack, &cx.region, address);
        match cx
            .aws
            .iam
            .get_role()
            .role_name(&name)
            .send()
            .await
            .map_err(api("GetRole"))
        {
            Err(e) if error_code(&e) == Some("NoSuchEntity") => Ok(None),
            Err(e) => Err(e),
            Ok(_) => {
                let tags = cx
                    .aws
                    .iam
                    .list_role_tags()
                    .role_name(&name)
                    .send()
                    .await
                    .map_err(api("ListRoleTags"))?;
                Ok(Some(
                    tags.tags()
                        .iter()
                        .map(|t| (t.key().to_string(), t.value().to_string()))
                        .collect(),
                ))
            }
        }
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let roles = cx
            .aws
            .iam
            .list_roles()
            .path_prefix(path(&cx.stack, &cx.region))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("ListRoles"))?;
        let reads = roles.iter().map(|role| async move {
            let name = role.role_name();
            let (tags, attached, inline) = tokio::try_join!(
                async {
                    cx.aws
                        .iam
                        .list_role_tags()
                        .role_name(name)
                        .send()
                        .await
                        .map_err(api("ListRoleTags"))
                },
                async {
                    cx.aws
                        .iam
                        .list_attached_role_policies()
                        .role_name(name)
                        .into_paginator()
                        .items()
                        .send()
                        .try_collect()
                        .await
                        .map_err(api("ListAttachedRolePolicies"))
                },
                async {
                    match cx
                        .aws
                        .iam
                        .get_role_policy()
                        .role_name(name)
                        .policy_name(INLINE)
                        .send()
                        .await
                        .map_err(api("GetRolePolicy"))
                    {
                        Err(e) if error_code(&e) == Some("NoSuchEntity") => Ok(None),
                        other => other.map(|p| canonical_from_aws(p.policy_document())),
                    }
                },
            )?;
            let tags: BTreeMap<String, String> = tags
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            let mut attrs = Attrs::new();
            let trust = role
                .assume_role_policy_document()
                .and_then(canonical_from_aws)
                .unwrap_or_default();
            attrs.insert("assume_role_policy".into(), Value::Str(trust));
            attrs.insert(
                "managed_policies".into(),
                Value::List(
                    attached
                        .iter()
                        .filter_map(|p| p.policy_arn())
                        .map(Value::str)
                        .collect(),
                ),
            );
            attrs.insert(
                "description".into(),
                Value::str(role.description().unwrap_or_default()),
            );
            if let Some(policy) = inline {
                attrs.insert("inline_policy".into(), Value::Str(policy));
            }
            Ok::<_, anyhow::Error>(Live::from_tags(role.arn(), tags, attrs))
        });
        Ok(super::read_all(reads.collect())
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let name = role_name(&cx.stack, &cx.region, &want.address);
        let mut call = cx
            .aws
            .iam
            .create_role()
            .role_name(&name)
            .path(path(&cx.stack, &cx.region))
            .assume_role_policy_document(want.str("assume_role_policy"))
            .description(want.str("description"));
        for (k, v) in &want.tags {
            call = call.tags(Tag::builder().key(k).value(v).build()?);
        }
        let out = call.send().await.map_err(api("CreateRole"))?;
        let arn = out.role().map(|r| r.arn().to_string()).unwrap_or_default();
        for policy in want
            .attrs
            .get("managed_policies")
            .map(Value::as_list)
            .unwrap_or_default()
        {
            attach(cx, &name, policy.as_str().unwrap_or_default()).await?;
        }
        put_inline(cx, &name, want).await?;
        Ok(Live::from_tags(arn, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address"))
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        let name = name_of(&live.id);
        for field in changed {
            match field.as_str() {
                "assume_role_policy" => {
                    cx.aws
                        .iam
                        .update_assume_role_policy()
                        .role_name(name)
                        .policy_document(want.str("assume_role_policy"))
                        .send()
                        .await
                        .map_err(api("UpdateAssumeRolePolicy"))?;
                }
                "inline_policy" => put_inline(cx, name, want).await?,
                "description" => {
                    cx.aws
                        .iam
                        .update_role()
                        .role_name(name)
                        .description(want.str("description"))
                        .send()
                        .await
                        .map_err(api("UpdateRole"))?;
                }
                "managed_policies" => {
                    let have = live
                        .attrs
                        .get("managed_policies")
                        .map(Value::as_list)
                        .unwrap_or_default();
                    let wanted = want
                        .attrs
                        .get("managed_policies")
                        .map(Value::as_list)
                        .unwrap_or_default();
                    for p in wanted.iter().filter(|p| !have.contains(p)) {
                        attach(cx, name, p.as_str().unwrap_or_default()).await?;
                    }
                    for p in have.iter().filter(|p| !wanted.contains(p)) {
                        detach(cx, name, p.as_str().unwrap_or_default()).await?;
                    }
                }
                "tags" => {
                    let (tag_pairs, tag_removed) = super::tag_delta(&live.tags, &want.tags);
                    let set: Vec<Tag> = tag_pairs
                        .into_iter()
                        .map(|(k, v)| Tag::builder().key(k).value(v).build())
                        .collect::<Result<_, _>>()?;
                    if !set.is_empty() {
                        cx.aws
                            .iam
                            .tag_role()
                            .role_name(name)
                            .set_tags(Some(set))
                            .send()
                            .await
                            .map_err(api("TagRole"))?;
                    }
                    let removed: Vec<String> = tag_removed;
                    if !removed.is_empty() {
                        cx.aws
                            .iam
                            .untag_role()
                            .role_name(name)
                            .set_tag_keys(Some(removed))
                            .send()
                            .await
                            .map_err(api("UntagRole"))?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        let name = name_of(&live.id);
        for p in live
            .attrs
            .get("managed_policies")
            .map(Value::as_list)
            .unwrap_or_default()
        {
            detach(cx, name, p.as_str().unwrap_or_default()).await?;
        }
        if live.attrs.contains_key("inline_policy") {
            match cx
                .aws
                .iam
                .delete_role_policy()
                .role_name(name)
                .policy_name(INLINE)
                .send()
                .await
                .map_err(api("DeleteRolePolicy"))
            {
                Err(e) if error_code(&e) == Some("NoSuchEntity") => {}
                other => {
                    other?;
                }
            }
        }
        match cx
            .aws
            .iam
            .delete_role()
            .role_name(name)
            .send()
            .await
            .map_err(api("DeleteRole"))
        {
            Err(e) if error_code(&e) == Some("NoSuchEntity") => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// Puts the wanted inline policy, or removes it when the plan has none.
async fn put_inline(cx: &Cx, role: &str, want: &Desired) -> Result<()> {
    match want.attrs.get("inline_policy").and_then(Value::as_str) {
        Some(doc) => {
            eventually(|| async {
                cx.aws
                    .iam
                    .put_role_policy()
                    .role_name(role)
                    .policy_name(INLINE)
                    .policy_document(doc)
                    .send()
                    .await
                    .map_err(api("PutRolePolicy"))
            })
            .await?;
        }
        None => match cx
            .aws
            .iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(INLINE)
            .send()
            .await
            .map_err(api("DeleteRolePolicy"))
        {
            Err(e) if error_code(&e) == Some("NoSuchEntity") => {}
            other => {
                other?;
            }
        },
    }
    Ok(())
}

async fn attach(cx: &Cx, role: &str, policy: &str) -> Result<()> {
    eventually(|| async {
        cx.aws
            .iam
            .attach_role_policy()
            .role_name(role)
            .policy_arn(policy)
            .send()
            .await
            .map_err(api("AttachRolePolicy"))
    })
    .await?;
    Ok(())
}

async fn detach(cx: &Cx, role: &str, policy: &str) -> Result<()> {
    match cx
        .aws
        .iam
        .detach_role_policy()
        .role_name(role)
        .policy_arn(policy)
        .send()
        .await
        .map_err(api("DetachRolePolicy"))
    {
        Err(e) if error_code(&e) == Some("NoSuchEntity") => Ok(()),
        other => other.map(|_| ()),
    }
}
