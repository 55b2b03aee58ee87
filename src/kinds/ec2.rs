//! What the EC2-based kinds share: the stack's tag filter, tags in create calls,
//! and in-place tag updates.

use std::collections::BTreeMap;

use anyhow::Result;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

use super::Cx;
use crate::aws::{api, eventually};
use crate::model::TAG_STACK;

/// `tag:tsprov:stack = <stack>`: the filter of every batched Describe call.
pub fn stack_filter(stack: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{TAG_STACK}"))
        .values(stack)
        .build()
}

pub fn filter(name: &str, values: &[&str]) -> Filter {
    let mut f = Filter::builder().name(name);
    for v in values {
        f = f.values(*v);
    }
    f.build()
}

/// Tags in the create call itself, so nothing is ever born untagged.
pub fn tag_spec(resource_type: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    let mut spec = TagSpecification::builder().resource_type(resource_type);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(k).value(v).build());
    }
    spec.build()
}

pub fn tags_of(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// Makes the live tags equal to the wanted ones: CreateTags for new or changed, DeleteTags for removed.
pub async fn update_tags(
    cx: &Cx,
    id: &str,
    live: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Result<()> {
    let (tag_pairs, tag_removed) = super::tag_delta(live, want);
    let set: Vec<Tag> = tag_pairs
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    let removed: Vec<Tag> = tag_removed
        .iter()
        .map(|k| Tag::builder().key(k).build())
        .collect();
    if !set.is_empty() {
        eventually(|| async {
            cx.aws
                .ec2
                .create_tags()
                .resources(id)
                .set_tags(Some(set.clone()))
                .send()
                .await
                .map_err(api("CreateTags"))
        })
        .await?;
    }
    if !removed.is_empty() {
        cx.aws
            .ec2
            .delete_tags()
            .resources(id)
            .set_tags(Some(removed))
            .send()
            .await
            .map_err(api("DeleteTags"))?;
    }
    Ok(())
}
