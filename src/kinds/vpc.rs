//! `vpc`: CreateVpc / ModifyVpcAttribute / DeleteVpc.

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, VpcAttributeName};

use super::ec2::{filter, stack_filter, tag_spec, tags_of, update_tags};
use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually, while_dependency_violation};
use crate::model::{Attrs, Value};
use crate::schema::{Default, Field, Ty};

pub struct Vpc;

const FIELDS: &[Field] = &[
    Field::new("cidr_block", Ty::Cidr, "the VPC's IPv4 range").replace(),
    Field::new(
        "enable_dns_support",
        Ty::Bool,
        "Amazon DNS server in the VPC",
    )
    .default(Default::Bool(true)),
    Field::new(
        "enable_dns_hostnames",
        Ty::Bool,
        "public DNS hostnames for instances",
    )
    .default(Default::Bool(true)),
];

#[async_trait]
impl Kind for Vpc {
    fn name(&self) -> &'static str {
        "vpc"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let vpcs = cx
            .aws
            .ec2
            .describe_vpcs()
            .filters(stack_filter(&cx.stack))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeVpcs"))?;
        // DNS attributes have no batch read: two calls per VPC, run together.
        let reads = vpcs.iter().map(|vpc| async move {
            let id = vpc.vpc_id().unwrap_or_default();
            let (support, hostnames) = tokio::try_join!(
                dns_attribute(cx, id, VpcAttributeName::EnableDnsSupport),
                dns_attribute(cx, id, VpcAttributeName::EnableDnsHostnames)
            )?;
            let mut attrs = Attrs::new();
            attrs.insert(
                "cidr_block".into(),
                Value::str(vpc.cidr_block().unwrap_or_default()),
            );
            attrs.insert("enable_dns_support".into(), Value::Bool(support));
            attrs.insert("enable_dns_hostnames".into(), Value::Bool(hostnames));
            Ok::<_, anyhow::Error>(Live::from_tags(id, tags_of(vpc.tags()), attrs))
        });
        Ok(super::read_all(reads.collect())
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let out = cx
            .aws
            .ec2
            .create_vpc()
            .cidr_block(want.str("cidr_block"))
            .tag_specifications(tag_spec(ResourceType::Vpc, &want.tags))
            .customize()
            .config_override(crate::aws::ec2_once())
            .send()
            .await
            .map_err(api("CreateVpc"))?;
        let id = out
            .vpc()
            .and_then(|v| v.vpc_id())
            .unwrap_or_default()
            .to_string();
        let live = Live::from_tags(&id, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address");
        set_dns(
            cx,
            &id,
            want,
            &["enable_dns_support".into(), "enable_dns_hostnames".into()],
        )
        .await?;
        Ok(live)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        set_dns(cx, &live.id, want, changed).await?;
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, &live.id, &live.tags, &want.tags).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        let result = while_dependency_violation(cx.dependency_timeout, || async {
            cx.aws
                .ec2
                .delete_vpc()
                .vpc_id(&live.id)
                .send()
                .await
                .map_err(api("DeleteVpc"))
                .map(|_| ())
        })
        .await;
        match result {
            Err(e) if error_code(&e) == Some("DependencyViolation") => {
                let blockers = what_lives_in(cx, &live.id)
                    .await
                    .unwrap_or_else(|e| format!("(could not list: {e})"));
                Err(e.context(format!("{} still holds: {blockers}", live.id)))
            }
            Err(e) if error_code(&e) == Some("InvalidVpcID.NotFound") => Ok(()),
            other => other,
        }
    }
}

async fn dns_attribute(cx: &Cx, vpc_id: &str, attribute: VpcAttributeName) -> Result<bool> {
    // Listed by DescribeVpcs, so it exists: a NotFound here is EC2 catching up.
    let out = eventually(|| async {
        cx.aws
            .ec2
            .describe_vpc_attribute()
            .vpc_id(vpc_id)
            .attribute(attribute.clone())
            .send()
            .await
            .map_err(api("DescribeVpcAttribute"))
    })
    .await?;
    let value = match attribute {
        VpcAttributeName::EnableDnsSupport => out.enable_dns_support().and_then(|a| a.value()),
        _ => out.enable_dns_hostnames().and_then(|a| a.value()),
    };
    Ok(value.unwrap_or(false))
}

/// ModifyVpcAttribute takes one attribute per call.
async fn set_dns(cx: &Cx, vpc_id: &str, want: &Desired, changed: &[String]) -> Result<()> {
    for field in ["enable_dns_support", "enable_dns_hostnames"] {
        if !changed.iter().any(|c| c == field) {
            continue;
        }
        let value = AttributeBooleanValue::builder()
            .value(want.bool(field))
            .build();
        eventually(|| async {
            let call = cx.aws.ec2.modify_vpc_attribute().vpc_id(vpc_id);
            let call = if field == "enable_dns_support" {
                call.enable_dns_support(value.clone())
            } else {
                call.enable_dns_hostnames(value.clone())
            };
            call.send().await.map_err(api("ModifyVpcAttribute"))
        })
        .await?;
    }
    Ok(())
}

/// For a VPC that will not go: the network interfaces and subnets still in it.
async fn what_lives_in(cx: &Cx, vpc_id: &str) -> Result<String> {
    let vpc_filter = filter("vpc-id", &[vpc_id]);
    let enis = cx
        .aws
        .ec2
        .describe_network_interfaces()
        .filters(vpc_filter.clone())
        .send()
        .await
        .map_err(api("DescribeNetworkInterfaces"))?;
    let subnets = cx
        .aws
        .ec2
        .describe_subnets()
        .filters(vpc_filter)
        .send()
        .await
        .map_err(api("DescribeSubnets"))?;
    let mut items: Vec<String> = enis
        .network_interfaces()
        .iter()
        .map(|e| {
            format!(
                "{} ({})",
                e.network_interface_id().unwrap_or("?"),
                e.description().unwrap_or("network interface")
            )
        })
        .collect();
    items.extend(
        subnets
            .subnets()
            .iter()
            .map(|s| format!("subnet {}", s.subnet_id().unwrap_or("?"))),
    );
    Ok(if items.is_empty() {
        "nothing tsprov can see (retry later)".into()
    } else {
        items.join(", ")
    })
}
