//! Resource kinds: one file per kind, the only place that knows that kind's AWS
//! API (batched discovery by tag, create with tags, update, delete, waiters).
//! Adding a kind = one file here + one line in `registry()`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;

use crate::aws::Clients;
use crate::model::{Address, Attrs, Resource, TAG_ADDRESS, TAG_STACK};
use crate::plan::source::Diagnostic;
use crate::report::Progress;
use crate::schema::Field;

mod ec2;
pub mod eip;
pub mod eks;
pub mod elasticache;
pub mod flow_log;
pub mod iam_role;
pub mod internet_gateway;
pub mod kms_key;
pub mod log_group;
pub mod nat_gateway;
pub mod rds;
pub mod route_table;
pub mod s3_bucket;
pub mod security_group;
pub mod subnet;
pub mod vpc;

/// Every kind, in the order discovery runs them.
pub fn registry() -> &'static [&'static dyn Kind] {
    &[
        &kms_key::KmsKey,
        &iam_role::IamRole,
        &log_group::LogGroup,
        &vpc::Vpc,
        &subnet::Subnet,
        &internet_gateway::InternetGateway,
        &eip::Eip,
        &nat_gateway::NatGateway,
        &route_table::RouteTable,
        &security_group::SecurityGroup,
        &security_group::SecurityGroupRules,
        &flow_log::FlowLog,
        &s3_bucket::S3Bucket,
        &eks::EksCluster,
        &eks::EksNodeGroup,
        &rds::DbSubnetGroup,
        &rds::RdsCluster,
        &rds::RdsInstance,
        &elasticache::CacheSubnetGroup,
        &elasticache::ReplicationGroup,
    ]
}

pub fn by_name(name: &str) -> Option<&'static dyn Kind> {
    registry().iter().copied().find(|k| k.name() == name)
}

/// What a kind's calls get: the region's clients and where to report progress.
pub struct Cx {
    pub stack: String,
    pub region: String,
    pub aws: Clients,
    pub progress: Progress,
    /// How long a delete may keep answering `DependencyViolation`.
    pub dependency_timeout: Duration,
    /// Scales every kind's waiter timeout (tests shorten it).
    pub wait_scale: f64,
    /// Also look for what cheap discovery cannot see (a KMS key whose alias was never
    /// made): destroy must leave nothing, even after a crash.
    pub find_orphans: bool,
}

impl Cx {
    pub fn wait_timeout(&self, base: Duration) -> Duration {
        base.mul_f64(self.wait_scale)
    }
}

/// A resource as it lives in AWS, found by its `tsprov:stack` tag.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Live {
    pub address: Address,
    pub id: String,
    /// The same fields as the kind's schema; references hold the AWS id they point at.
    pub attrs: Attrs,
    pub tags: BTreeMap<String, String>,
    /// Ids the kind needs to manage it but that are not attributes (association ids, ...).
    pub handles: BTreeMap<String, String>,
}

impl Live {
    /// Builds a live resource from its tags; `None` for one without a valid address tag.
    /// Builds a live resource from its tags; `None` for one without the stack tag.
    /// One that carries the stack tag but no valid address tag (tagged by hand) gets the
    /// placeholder kind `untracked`, which discovery replaces by its own kind.
    pub fn from_tags(
        id: impl Into<String>,
        tags: BTreeMap<String, String>,
        attrs: Attrs,
    ) -> Option<Live> {
        let id = id.into();
        let address = match tags.get(TAG_ADDRESS).and_then(|a| Address::parse(a)) {
            Some(a) => a,
            None if tags.contains_key(TAG_STACK) => {
                Address::new(UNTRACKED, &untracked_name(&id), None)
            }
            None => return None,
        };
        Some(Live {
            address,
            id,
            attrs,
            tags,
            handles: BTreeMap::new(),
        })
    }
}

pub const UNTRACKED: &str = "untracked";

/// The live resources of one kind that belong to this stack. A kind's Describe filters
/// are AWS's (some kinds cannot filter at all); this is ours: never touch what lacks
/// this stack's tag. Resources tagged with the stack by hand get their kind.
pub async fn discover_own(kind: &dyn Kind, cx: &Cx) -> Result<Vec<Live>> {
    let mut found = kind.discover(cx).await?;
    found.retain(|l| l.tags.get(TAG_STACK) == Some(&cx.stack));
    for l in found.iter_mut().filter(|l| l.address.kind == UNTRACKED) {
        l.address.kind = kind.name().to_string();
    }
    Ok(found)
}

/// The tag changes that make `live` equal to `want`: pairs to set (new or changed)
/// and keys to remove (never AWS's own `aws:` tags).
pub fn tag_delta<'a>(
    live: &BTreeMap<String, String>,
    want: &'a BTreeMap<String, String>,
) -> (Vec<(&'a String, &'a String)>, Vec<String>) {
    let set = want
        .iter()
        .filter(|(k, v)| live.get(*k) != Some(*v))
        .collect();
    let removed = live
        .keys()
        .filter(|k| !want.contains_key(*k) && !k.starts_with("aws:"))
        .cloned()
        .collect();
    (set, removed)
}

/// An address name for a resource tagged with the stack but not by tsprov: `untracked-<id>`.
pub fn untracked_name(id: &str) -> String {
    let clean: String = id
        .rsplit(['/', ':'])
        .next()
        .unwrap_or(id)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("untracked-{clean}")
}

/// Per-resource reads of one kind in one region (where AWS has no batch read), at most
/// this many at once: thousands of buckets must not open thousands of connections.
const READS_IN_FLIGHT: usize = 16;

/// Runs per-resource reads with bounded concurrency, in order; the first error ends them.
pub async fn read_all<T, F>(reads: Vec<F>) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>>,
{
    use futures::stream::{StreamExt, TryStreamExt};
    futures::stream::iter(reads)
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await
}

/// The strings of a list attribute (subnet ids, security groups, instance types).
pub fn strs(v: Option<&crate::model::Value>) -> Vec<String> {
    v.map(crate::model::Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// A resource as apply wants it: references replaced by the ids they point at.
#[derive(Clone, Debug)]
pub struct Desired {
    pub address: Address,
    pub attrs: Attrs,
    pub tags: BTreeMap<String, String>,
}

impl Desired {
    pub fn str(&self, field: &str) -> &str {
        self.attrs
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }
    pub fn bool(&self, field: &str) -> bool {
        self.attrs
            .get(field)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

pub enum Guard {
    /// It holds data: deleting or replacing it needs `--allow-destroy ADDRESS`.
    HoldsData(String),
    /// AWS itself refuses until a setting changes; the message says which.
    Protected(String),
}

#[async_trait]
pub trait Kind: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn fields(&self) -> &'static [Field];
    fn taggable(&self) -> bool {
        true
    }
    /// Kinds tsprov derives from another block; not written in plan files.
    fn internal(&self) -> bool {
        false
    }
    /// Whether deleting this live resource would destroy data (`--allow-destroy` needed)
    /// or is impossible as it stands (deletion protection on).
    fn deletion_guard(&self, _live: &Live) -> Option<Guard> {
        None
    }
    /// For kinds whose AWS name tsprov chooses: the tags of a resource that already
    /// carries the name this address would get (`None`: the name is free). Asked only
    /// before a create, so that a same-named resource of someone else is never adopted.
    async fn name_taken(
        &self,
        _cx: &Cx,
        _address: &Address,
    ) -> Result<Option<BTreeMap<String, String>>> {
        Ok(None)
    }
    /// One plan block may stand for several resources (a security group and its rules).
    fn expand(&self, resource: Resource) -> Vec<Resource> {
        vec![resource]
    }
    /// Checks of one resource of this kind (the rest of the region at hand).
    fn check(&self, _resource: &Resource, _region: &[Resource], _diags: &mut Vec<Diagnostic>) {}
    /// Checks across all of a region's resources, run once per kind and region.
    fn check_all(&self, _region: &[Resource], _diags: &mut Vec<Diagnostic>) {}
    /// Every live resource of this kind tagged with the stack, in as few calls as AWS allows.
    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>>;
    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live>;
    /// Changes the named attributes (and `tags`) in place.
    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()>;
    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()>;
}
