//! `subnet`: CreateSubnet / ModifySubnetAttribute / DeleteSubnet.

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};
use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;

use super::ec2::{stack_filter, tag_spec, tags_of, update_tags};
use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually, while_dependency_violation};
use crate::model::{Address, Attrs, Resource, Value};
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

    fn check(&self, r: &Resource, _region: &[Resource], diags: &mut Vec<Diagnostic>) {
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
    }

    /// Inside its VPC, and no overlap with a sibling: one pass per region, sorted, so a
    /// plan with thousands of subnets is checked in n log n.
    fn check_all(&self, region: &[Resource], diags: &mut Vec<Diagnostic>) {
        let vpcs: HashMap<&Address, &Resource> = region
            .iter()
            .filter(|r| r.address.kind == "vpc")
            .map(|r| (&r.address, r))
            .collect();
        let mut by_vpc: BTreeMap<&Address, Vec<(u8, u128, u128, &Resource)>> = BTreeMap::new();
        for r in region.iter().filter(|r| r.address.kind == "subnet") {
            let (Some(net), Some(Value::Ref(vpc_addr))) = (cidr(r), r.attrs.get("vpc")) else {
                continue;
            };
            if let Some(vpc_net) = vpcs.get(vpc_addr).and_then(|v| cidr(v)) {
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
            let (family, first, last) = match net {
                IpNet::V4(n) => (
                    4,
                    u32::from(n.network()) as u128,
                    u32::from(n.broadcast()) as u128,
                ),
                IpNet::V6(n) => (6, u128::from(n.network()), u128::from(n.broadcast())),
            };
            by_vpc
                .entry(vpc_addr)
                .or_default()
                .push((family, first, last, r));
        }
        for subnets in by_vpc.values_mut() {
            subnets.sort_by(|a, b| {
                (a.0, a.1, std::cmp::Reverse(a.2)).cmp(&(b.0, b.1, std::cmp::Reverse(b.2)))
            });
            // The subnet reaching furthest so far: any later one starting inside it overlaps it.
            let mut reach: Option<(u8, u128, &Resource)> = None;
            for &(family, first, last, r) in subnets.iter() {
                match reach {
                    Some((f, end, holder)) if f == family && first <= end => {
                        let (a, b) = if holder.address < r.address {
                            (holder, r)
                        } else {
                            (r, holder)
                        };
                        diags.push(
                            Diagnostic::new(
                                b.span_of("cidr_block"),
                                format!(
                                    "{} ({}): {} overlaps {} ({})",
                                    b.address,
                                    r.region,
                                    cidr(b).unwrap(),
                                    a.address,
                                    cidr(a).unwrap()
                                ),
                            )
                            .help("sibling subnets of one VPC must not overlap"),
                        );
                        if last > end {
                            reach = Some((family, last, r));
                        }
                    }
                    _ => reach = Some((family, last, r)),
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
