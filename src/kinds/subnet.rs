//! `subnet`: CreateSubnet / ModifySubnetAttribute / DeleteSubnet.

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};
use ipnet::IpNet;

use super::ec2::{stack_filter, tag_spec, tags_of, update_tags};
use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually, while_dependency_violation};
use crate::model::{Attrs, Resource, Value};
use crate::plan::source::Diagnostic;
use crate::schema::{Default, Field, Ty};

pub struct Subnet;

const FIELDS: &[Field] = &[
    Field::new("vpc", Ty::Ref(&["vpc"]), "the VPC it belongs to").replace(),
    Field::new("cidr_block", Ty::Cidr, "its range, inside the VPC's").replace(),
    Field::new(
        "availability_zone",
        Ty::Str,
        "its AZ; per_az blocks default to theirs",
    )
    .default(Default::Str("${az}"))
    .replace(),
    Field::new(
        "map_public_ip_on_launch",
        Ty::Bool,
        "public IPv4 for instances launched in it",
    )
    .default(Default::Bool(false)),
];

fn cidr(r: &Resource) -> Option<IpNet> {
    r.attrs.get("cidr_block")?.as_str()?.parse().ok()
}

#[async_trait]
impl Kind for Subnet {
    fn name(&self) -> &'static str {
        "subnet"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn check(&self, r: &Resource, region: &[Resource], diags: &mut Vec<Diagnostic>) {
        let az = r
            .attrs
            .get("availability_zone")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !az
            .strip_prefix(r.region.as_str())
            .is_some_and(|s| s.len() == 1 && s.chars().all(|c| c.is_ascii_lowercase()))
        {
            diags.push(
                Diagnostic::new(
                    r.span_of("availability_zone"),
                    format!(
                        "{}: availability zone {az:?} is not in {}",
                        r.address, r.region
                    ),
                )
                .help(format!(
                    "AZs of {} are named {}a, {}b, ...",
                    r.region, r.region, r.region
                )),
            );
        }
        let (Some(net), Some(Value::Ref(vpc_addr))) = (cidr(r), r.attrs.get("vpc")) else {
            return;
        };
        let Some(vpc) = region.iter().find(|o| &o.address == vpc_addr) else {
            return;
        };
        if let Some(vpc_net) = cidr(vpc) {
            if !vpc_net.contains(&net) {
                diags.push(
                    Diagnostic::new(
                        r.span_of("cidr_block"),
                        format!(
                            "{} ({}): {net} is outside {vpc_addr} ({vpc_net})",
                            r.address, r.region
                        ),
                    )
                    .help(format!("choose a block inside {vpc_net}")),
                );
            }
        }
        for other in region.iter().filter(|o| {
            o.address.kind == "subnet"
                && o.address != r.address
                && o.attrs.get("vpc") == r.attrs.get("vpc")
        }) {
            if let Some(other_net) = cidr(other) {
                if other_net.contains(&net.network()) || net.contains(&other_net.network()) {
                    let (first, second) = if r.address < other.address {
                        (r, other)
                    } else {
                        (other, r)
                    };
                    diags.push(
                        Diagnostic::new(
                            second.span_of("cidr_block"),
                            format!(
                                "{} ({}): {} overlaps {} ({})",
                                second.address,
                                r.region,
                                cidr(second).unwrap(),
                                first.address,
                                cidr(first).unwrap()
                            ),
                        )
                        .help("sibling subnets of one VPC must not overlap"),
                    );
                }
            }
        }
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let subnets = cx
            .aws
            .ec2
            .describe_subnets()
            .filters(stack_filter(&cx.stack))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeSubnets"))?;
        Ok(subnets
            .iter()
            .filter_map(|s| {
                let mut attrs = Attrs::new();
                attrs.insert("vpc".into(), Value::str(s.vpc_id().unwrap_or_default()));
                attrs.insert(
                    "cidr_block".into(),
                    Value::str(s.cidr_block().unwrap_or_default()),
                );
                attrs.insert(
                    "availability_zone".into(),
                    Value::str(s.availability_zone().unwrap_or_default()),
                );
                attrs.insert(
                    "map_public_ip_on_launch".into(),
                    Value::Bool(s.map_public_ip_on_launch().unwrap_or(false)),
                );
                Live::from_tags(s.subnet_id().unwrap_or_default(), tags_of(s.tags()), attrs)
            })
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let out = cx
            .aws
            .ec2
            .create_subnet()
            .vpc_id(want.str("vpc"))
            .cidr_block(want.str("cidr_block"))
            .availability_zone(want.str("availability_zone"))
            .tag_specifications(tag_spec(ResourceType::Subnet, &want.tags))
            .send()
            .await
            .map_err(api("CreateSubnet"))?;
        let id = out
            .subnet()
            .and_then(|s| s.subnet_id())
            .unwrap_or_default()
            .to_string();
        if want.bool("map_public_ip_on_launch") {
            set_public_ip(cx, &id, true).await?;
        }
        Ok(Live::from_tags(id, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address"))
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        if changed.iter().any(|c| c == "map_public_ip_on_launch") {
            set_public_ip(cx, &live.id, want.bool("map_public_ip_on_launch")).await?;
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, &live.id, &live.tags, &want.tags).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        let result = while_dependency_violation(cx.dependency_timeout, || async {
            cx.aws
                .ec2
                .delete_subnet()
                .subnet_id(&live.id)
                .send()
                .await
                .map_err(api("DeleteSubnet"))
                .map(|_| ())
        })
        .await;
        match result {
            Err(e) if error_code(&e) == Some("InvalidSubnetID.NotFound") => Ok(()),
            other => other,
        }
    }
}

async fn set_public_ip(cx: &Cx, id: &str, on: bool) -> Result<()> {
    eventually(|| async {
        cx.aws
            .ec2
            .modify_subnet_attribute()
            .subnet_id(id)
            .map_public_ip_on_launch(AttributeBooleanValue::builder().value(on).build())
            .send()
            .await
            .map_err(api("ModifySubnetAttribute"))
    })
    .await?;
    Ok(())
}
