//! `eip`: Elastic IP addresses (for NAT gateways): AllocateAddress / ReleaseAddress.

use std::time::{Duration, Instant};

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_ec2::types::{DomainType, ResourceType};

use super::ec2::{stack_filter, tag_spec, tags_of, update_tags};
use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code};
use crate::model::Attrs;
use crate::schema::Field;

pub struct Eip;

#[async_trait]
impl Kind for Eip {
    fn name(&self) -> &'static str {
        "eip"
    }
    fn fields(&self) -> &'static [Field] {
        &[]
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        // DescribeAddresses is not paginated: one call returns them all.
        let out = cx
            .aws
            .ec2
            .describe_addresses()
            .filters(stack_filter(&cx.stack))
            .send()
            .await
            .map_err(api("DescribeAddresses"))?;
        Ok(out
            .addresses()
            .iter()
            .filter_map(|a| {
                Live::from_tags(
                    a.allocation_id().unwrap_or_default(),
                    tags_of(a.tags()),
                    Attrs::new(),
                )
            })
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let out = cx
            .aws
            .ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tag_spec(ResourceType::ElasticIp, &want.tags))
            .customize()
            .config_override(crate::aws::ec2_once())
            .send()
            .await
            .map_err(api("AllocateAddress"))?;
        Ok(Live::from_tags(
            out.allocation_id().unwrap_or_default(),
            want.tags.clone(),
            want.attrs.clone(),
        )
        .expect("desired tags carry the address"))
    }

    async fn update(
        &self,
        cx: &Cx,
        want: &Desired,
        live: &Live,
        _changed: &[String],
    ) -> Result<()> {
        update_tags(cx, &live.id, &live.tags, &want.tags).await
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        // A NAT gateway being deleted keeps its address for a moment.
        let start = Instant::now();
        loop {
            let result = cx
                .aws
                .ec2
                .release_address()
                .allocation_id(&live.id)
                .send()
                .await
                .map_err(api("ReleaseAddress"));
            match result {
                Ok(_) => return Ok(()),
                Err(e) if matches!(error_code(&e), Some("InvalidAllocationID.NotFound")) => {
                    return Ok(())
                }
                Err(e)
                    if matches!(
                        error_code(&e),
                        Some("InvalidIPAddress.InUse" | "AuthFailure" | "DependencyViolation")
                    ) && start.elapsed() < cx.dependency_timeout =>
                {
                    tokio::time::sleep(Duration::from_secs(2)).await
                }
                Err(e) => return Err(e),
            }
        }
    }
}
