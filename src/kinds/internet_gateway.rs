//! `internet_gateway`: CreateInternetGateway + AttachInternetGateway; detach then delete.

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_ec2::types::ResourceType;

use super::ec2::{stack_filter, tag_spec, tags_of, update_tags};
use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually, while_dependency_violation};
use crate::model::{Attrs, Value};
use crate::schema::{Field, Ty};

pub struct InternetGateway;

const FIELDS: &[Field] = &[Field::new(
    "vpc",
    Ty::Ref(&["vpc"]),
    "the VPC it is attached to",
)];

#[async_trait]
impl Kind for InternetGateway {
    fn name(&self) -> &'static str {
        "internet_gateway"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let igws = cx
            .aws
            .ec2
            .describe_internet_gateways()
            .filters(stack_filter(&cx.stack))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeInternetGateways"))?;
        Ok(igws
            .iter()
            .filter_map(|g| {
                let vpc = g
                    .attachments()
                    .first()
                    .and_then(|a| a.vpc_id())
                    .unwrap_or_default();
                let mut attrs = Attrs::new();
                attrs.insert("vpc".into(), Value::str(vpc));
                Live::from_tags(
                    g.internet_gateway_id().unwrap_or_default(),
                    tags_of(g.tags()),
                    attrs,
                )
            })
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let out = cx
            .aws
            .ec2
            .create_internet_gateway()
            .tag_specifications(tag_spec(ResourceType::InternetGateway, &want.tags))
            .customize()
            .config_override(crate::aws::ec2_once())
            .send()
            .await
            .map_err(api("CreateInternetGateway"))?;
        let id = out
            .internet_gateway()
            .and_then(|g| g.internet_gateway_id())
            .unwrap_or_default()
            .to_string();
        attach(cx, &id, want.str("vpc")).await?;
        Ok(Live::from_tags(id, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address"))
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        if changed.iter().any(|c| c == "vpc") {
            let old = live
                .attrs
                .get("vpc")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !old.is_empty() {
                detach(cx, &live.id, old).await?;
            }
            attach(cx, &live.id, want.str("vpc")).await?;
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, &live.id, &live.tags, &want.tags).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        let vpc = live
            .attrs
            .get("vpc")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !vpc.is_empty() {
            detach(cx, &live.id, vpc).await?;
        }
        let result = while_dependency_violation(cx.dependency_timeout, || async {
            cx.aws
                .ec2
                .delete_internet_gateway()
                .internet_gateway_id(&live.id)
                .send()
                .await
                .map_err(api("DeleteInternetGateway"))
                .map(|_| ())
        })
        .await;
        match result {
            Err(e) if error_code(&e) == Some("InvalidInternetGatewayID.NotFound") => Ok(()),
            other => other,
        }
    }
}

async fn attach(cx: &Cx, id: &str, vpc: &str) -> Result<()> {
    let attached = eventually(|| async {
        cx.aws
            .ec2
            .attach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc)
            .send()
            .await
            .map_err(api("AttachInternetGateway"))
    })
    .await;
    match attached {
        // Attached already: a call retried after its answer was lost. Attached to this
        // VPC? Only then is it done.
        Err(e) if error_code(&e) == Some("Resource.AlreadyAssociated") => {
            let out = cx
                .aws
                .ec2
                .describe_internet_gateways()
                .internet_gateway_ids(id)
                .send()
                .await
                .map_err(api("DescribeInternetGateways"))?;
            let to_vpc = out
                .internet_gateways()
                .iter()
                .flat_map(|g| g.attachments())
                .any(|a| a.vpc_id() == Some(vpc));
            if to_vpc {
                Ok(())
            } else {
                Err(e)
            }
        }
        other => other.map(|_| ()),
    }
}

/// Detaching fails with DependencyViolation while public addresses (NAT gateways) remain in the VPC.
async fn detach(cx: &Cx, id: &str, vpc: &str) -> Result<()> {
    let result = while_dependency_violation(cx.dependency_timeout, || async {
        cx.aws
            .ec2
            .detach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc)
            .send()
            .await
            .map_err(api("DetachInternetGateway"))
            .map(|_| ())
    })
    .await;
    match result {
        Err(e)
            if matches!(
                error_code(&e),
                Some("Gateway.NotAttached" | "InvalidInternetGatewayID.NotFound")
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}
