//! `s3_bucket`: a bucket named `<stack>-<region>-<name>`, created in its region,
//! with SSE-KMS, versioning, the four public-access blocks and tags. ListBuckets
//! is one call for the account; each of the stack's buckets then costs four reads
//! (tags, encryption, versioning, public-access block): S3 has no batch read.

use std::collections::BTreeMap;

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, Delete,
    ObjectIdentifier, PublicAccessBlockConfiguration, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    Tag, Tagging, VersioningConfiguration,
};

use super::{Cx, Desired, Guard, Kind, Live};
use crate::aws::{absent, api, error_code, eventually};
use crate::model::{Address, Attrs, Resource, Value, TAG_STACK};
use crate::plan::source::Diagnostic;
use crate::schema::{Default, Field, Ty};

pub struct S3Bucket;

const BLOCKS: [&str; 4] = [
    "block_public_acls",
    "ignore_public_acls",
    "block_public_policy",
    "restrict_public_buckets",
];

const FIELDS: &[Field] = &[
    Field::new(
        "kms_key",
        Ty::Ref(&["kms_key"]),
        "SSE-KMS with this key (default encryption)",
    )
    .default(Default::None),
    Field::new("versioning", Ty::Bool, "keep every version of every object")
        .default(Default::Bool(true)),
    Field::new("block_public_acls", Ty::Bool, "refuse public ACLs").default(Default::Bool(true)),
    Field::new("ignore_public_acls", Ty::Bool, "ignore public ACLs").default(Default::Bool(true)),
    Field::new(
        "block_public_policy",
        Ty::Bool,
        "refuse public bucket policies",
    )
    .default(Default::Bool(true)),
    Field::new(
        "restrict_public_buckets",
        Ty::Bool,
        "restrict access to buckets with public policies",
    )
    .default(Default::Bool(true)),
];

pub fn bucket_name(stack: &str, region: &str, address: &Address) -> String {
    let base = format!("{stack}-{region}-{}", address.name.replace('_', "-"));
    match address.index {
        Some(i) => format!("{base}-{i}"),
        None => base,
    }
    .to_lowercase()
}

#[async_trait]
impl Kind for S3Bucket {
    fn name(&self) -> &'static str {
        "s3_bucket"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn check(&self, r: &Resource, _region: &[Resource], diags: &mut Vec<Diagnostic>) {
        let name = bucket_name(
            r.tags
                .get(TAG_STACK)
                .map(String::as_str)
                .unwrap_or_default(),
            &r.region,
            &r.address,
        );
        if name.len() > 63 {
            diags.push(
                Diagnostic::new(
                    r.span.clone(),
                    format!(
                        "{}: bucket name {name:?} is longer than 63 characters",
                        r.address
                    ),
                )
                .help("use a shorter stack or block name"),
            );
        }
    }

    fn deletion_guard(&self, _live: &Live) -> Option<Guard> {
        Some(Guard::HoldsData(
            "an S3 bucket: its objects and their versions are deleted with it".into(),
        ))
    }

    async fn name_taken(
        &self,
        cx: &Cx,
        address: &Address,
    ) -> Result<Option<BTreeMap<String, String>>> {
        let name = bucket_name(&cx.stack, &cx.region, address);
        match cx
            .aws
            .s3
            .head_bucket()
            .bucket(&name)
            .send()
            .await
            .map_err(api("HeadBucket"))
        {
            Err(e) if matches!(error_code(&e), Some("NotFound" | "NoSuchBucket" | "404")) => {
                return Ok(None)
            }
            // Another account's bucket: taken, and its tags are not ours to read.
            Err(e) if matches!(error_code(&e), Some("Forbidden" | "403")) => {
                return Ok(Some(BTreeMap::new()))
            }
            other => {
                other?;
            }
        }
        let tags = cx
            .aws
            .s3
            .get_bucket_tagging()
            .bucket(&name)
            .send()
            .await
            .map_err(api("GetBucketTagging"));
        Ok(Some(
            absent(tags, &["NoSuchTagSet", "NoSuchTagSetError"])?
                .map(|t| {
                    t.tag_set()
                        .iter()
                        .map(|t| (t.key().to_string(), t.value().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        ))
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let prefix = format!("{}-{}-", cx.stack, cx.region);
        let all = cx
            .aws
            .s3
            .list_buckets()
            .send()
            .await
            .map_err(api("ListBuckets"))?;
        let ours: Vec<String> = all
            .buckets()
            .iter()
            .filter_map(|b| b.name())
            .filter(|n| n.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        let reads = ours.iter().map(|name| read_bucket(cx, name));
        Ok(super::read_all(reads.collect())
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let name = bucket_name(&cx.stack, &cx.region, &want.address);
        // Tags in the create call itself, so a bucket is never born untagged (a crash
        // between create and tagging would leave a bucket no run could claim).
        let mut config = CreateBucketConfiguration::builder().set_tags(Some(s3_tags(&want.tags)?));
        if cx.region != "us-east-1" {
            config = config.location_constraint(BucketLocationConstraint::from(cx.region.as_str()));
        }
        match cx
            .aws
            .s3
            .create_bucket()
            .bucket(&name)
            .create_bucket_configuration(config.build())
            .send()
            .await
            .map_err(api("CreateBucket"))
        {
            // Ours already (a create retried after a lost answer): go on configuring it.
            Err(e) if error_code(&e) == Some("BucketAlreadyOwnedByYou") => {
                put_tags(cx, &name, &want.tags).await?;
            }
            other => {
                other?;
            }
        }
        put_encryption(cx, &name, want).await?;
        put_versioning(cx, &name, want.bool("versioning")).await?;
        put_public_access_block(cx, &name, want).await?;
        Ok(Live::from_tags(name, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address"))
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        if changed.iter().any(|c| c == "tags") {
            put_tags(cx, &live.id, &want.tags).await?;
        }
        if changed.iter().any(|c| c == "kms_key") {
            put_encryption(cx, &live.id, want).await?;
        }
        if changed.iter().any(|c| c == "versioning") {
            put_versioning(cx, &live.id, want.bool("versioning")).await?;
        }
        if changed.iter().any(|c| BLOCKS.contains(&c.as_str())) {
            put_public_access_block(cx, &live.id, want).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        empty(cx, &live.id).await?;
        match cx
            .aws
            .s3
            .delete_bucket()
            .bucket(&live.id)
            .send()
            .await
            .map_err(api("DeleteBucket"))
        {
            Err(e) if error_code(&e) == Some("NoSuchBucket") => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

async fn read_bucket(cx: &Cx, name: &str) -> Result<Option<Live>> {
    let s3 = &cx.aws.s3;
    let (tags, encryption, versioning, block) = tokio::join!(
        async {
            s3.get_bucket_tagging()
                .bucket(name)
                .send()
                .await
                .map_err(api("GetBucketTagging"))
        },
        async {
            s3.get_bucket_encryption()
                .bucket(name)
                .send()
                .await
                .map_err(api("GetBucketEncryption"))
        },
        async {
            s3.get_bucket_versioning()
                .bucket(name)
                .send()
                .await
                .map_err(api("GetBucketVersioning"))
        },
        async {
            s3.get_public_access_block()
                .bucket(name)
                .send()
                .await
                .map_err(api("GetPublicAccessBlock"))
        },
    );
    let tags: BTreeMap<String, String> = absent(tags, &["NoSuchTagSet", "NoSuchTagSetError"])?
        .map(|t| {
            t.tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut attrs = Attrs::new();
    let kms = absent(
        encryption,
        &["ServerSideEncryptionConfigurationNotFoundError"],
    )?
    .and_then(|e| {
        let rule = e
            .server_side_encryption_configuration()?
            .rules()
            .first()?
            .apply_server_side_encryption_by_default()?
            .clone();
        (rule.sse_algorithm() == &ServerSideEncryption::AwsKms)
            .then(|| rule.kms_master_key_id().unwrap_or_default().to_string())
    });
    if let Some(key) = kms {
        attrs.insert("kms_key".into(), Value::Str(key));
    }
    attrs.insert(
        "versioning".into(),
        Value::Bool(versioning?.status() == Some(&BucketVersioningStatus::Enabled)),
    );
    let block = absent(block, &["NoSuchPublicAccessBlockConfiguration"])?;
    let conf = block
        .as_ref()
        .and_then(|b| b.public_access_block_configuration());
    let flags = [
        conf.and_then(|c| c.block_public_acls()),
        conf.and_then(|c| c.ignore_public_acls()),
        conf.and_then(|c| c.block_public_policy()),
        conf.and_then(|c| c.restrict_public_buckets()),
    ];
    for (field, flag) in BLOCKS.iter().zip(flags) {
        attrs.insert(field.to_string(), Value::Bool(flag.unwrap_or(false)));
    }
    Ok(Live::from_tags(name, tags, attrs))
}

fn s3_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>> {
    Ok(tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<_, _>>()?)
}

async fn put_tags(cx: &Cx, bucket: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    let set = s3_tags(tags)?;
    let tagging = Tagging::builder().set_tag_set(Some(set)).build()?;
    eventually(|| async {
        cx.aws
            .s3
            .put_bucket_tagging()
            .bucket(bucket)
            .tagging(tagging.clone())
            .send()
            .await
            .map_err(api("PutBucketTagging"))
    })
    .await?;
    Ok(())
}

async fn put_encryption(cx: &Cx, bucket: &str, want: &Desired) -> Result<()> {
    match want.attrs.get("kms_key").and_then(Value::as_str) {
        Some(key) => {
            let default = ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::AwsKms)
                .kms_master_key_id(key)
                .build()?;
            let rule = ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(default)
                .bucket_key_enabled(true)
                .build();
            let conf = ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()?;
            cx.aws
                .s3
                .put_bucket_encryption()
                .bucket(bucket)
                .server_side_encryption_configuration(conf)
                .send()
                .await
                .map_err(api("PutBucketEncryption"))?;
        }
        None => {
            cx.aws
                .s3
                .delete_bucket_encryption()
                .bucket(bucket)
                .send()
                .await
                .map_err(api("DeleteBucketEncryption"))?;
        }
    }
    Ok(())
}

async fn put_versioning(cx: &Cx, bucket: &str, on: bool) -> Result<()> {
    let status = if on {
        BucketVersioningStatus::Enabled
    } else {
        BucketVersioningStatus::Suspended
    };
    cx.aws
        .s3
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build())
        .send()
        .await
        .map_err(api("PutBucketVersioning"))?;
    Ok(())
}

async fn put_public_access_block(cx: &Cx, bucket: &str, want: &Desired) -> Result<()> {
    let conf = PublicAccessBlockConfiguration::builder()
        .block_public_acls(want.bool("block_public_acls"))
        .ignore_public_acls(want.bool("ignore_public_acls"))
        .block_public_policy(want.bool("block_public_policy"))
        .restrict_public_buckets(want.bool("restrict_public_buckets"))
        .build();
    cx.aws
        .s3
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(conf)
        .send()
        .await
        .map_err(api("PutPublicAccessBlock"))?;
    Ok(())
}

/// Deletes every object version and delete marker, 1000 at a time.
async fn empty(cx: &Cx, bucket: &str) -> Result<()> {
    loop {
        let page = match cx
            .aws
            .s3
            .list_object_versions()
            .bucket(bucket)
            .send()
            .await
            .map_err(api("ListObjectVersions"))
        {
            Err(e) if error_code(&e) == Some("NoSuchBucket") => return Ok(()),
            other => other?,
        };
        let mut ids: Vec<ObjectIdentifier> = Vec::new();
        for v in page.versions() {
            ids.push(
                ObjectIdentifier::builder()
                    .key(v.key().unwrap_or_default())
                    .set_version_id(v.version_id().map(str::to_string))
                    .build()?,
            );
        }
        for m in page.delete_markers() {
            ids.push(
                ObjectIdentifier::builder()
                    .key(m.key().unwrap_or_default())
                    .set_version_id(m.version_id().map(str::to_string))
                    .build()?,
            );
        }
        if ids.is_empty() {
            return Ok(());
        }
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()?;
        cx.aws
            .s3
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(api("DeleteObjects"))?;
    }
}
