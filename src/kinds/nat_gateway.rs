//! `nat_gateway`: CreateNatGateway (with a client token, so a retried create never
//! makes a second one) and its waiters: available after create, deleted after delete.

use std::time::Duration;

use anyhow::{bail, Result};
use async_trait::async_trait;
use aws_sdk_ec2::types::{ConnectivityType, NatGatewayState, ResourceType};

use super::ec2::{stack_filter, tag_spec, tags_of, update_tags};
use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually, wait_until, Poll};
use crate::model::{Attrs, Value};
use crate::plan::read::fnv;
use crate::schema::{Default, Field, Ty};

pub struct NatGateway;

const FIELDS: &[Field] = &[
    Field::new(
        "subnet",
        Ty::Ref(&["subnet"]),
        "the public subnet it sits in",
    )
    .replace(),
    Field::new("eip", Ty::Ref(&["eip"]), "its Elastic IP").replace(),
    Field::new(
        "connectivity_type",
        Ty::Enum(&["public", "private"]),
        "public (through the IGW) or private",
    )
    .default(Default::Str("public"))
    .replace(),
];

const CREATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

#[async_trait]
impl Kind for NatGateway {
    fn name(&self) -> &'static str {
        "nat_gateway"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let nats = cx
            .aws
            .ec2
            .describe_nat_gateways()
            .filter(stack_filter(&cx.stack))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeNatGateways"))?;
        Ok(nats
            .iter()
            // Deleted and failed gateways linger in Describe for a while; they hold nothing.
            .filter(|n| {
                matches!(
                    n.state(),
                    Some(NatGatewayState::Pending | NatGatewayState::Available)
                )
            })
            .filter_map(|n| {
                let mut attrs = Attrs::new();
                attrs.insert(
                    "subnet".into(),
                    Value::str(n.subnet_id().unwrap_or_default()),
                );
                let eip = n
                    .nat_gateway_addresses()
                    .first()
                    .and_then(|a| a.allocation_id())
                    .unwrap_or_default();
                attrs.insert("eip".into(), Value::str(eip));
                attrs.insert(
                    "connectivity_type".into(),
                    Value::str(
                        n.connectivity_type()
                            .map(|c| c.as_str())
                            .unwrap_or("public"),
                    ),
                );
                Live::from_tags(
                    n.nat_gateway_id().unwrap_or_default(),
                    tags_of(n.tags()),
                    attrs,
                )
            })
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        // Same stack, address and inputs -> same token: AWS returns the gateway of the first
        // attempt. If that gateway has since been deleted (a destroy cut short, then apply),
        // the token is salted with its id: still the same for every retry of this create.
        let mut seed = format!(
            "{}/{}/{}/{}/{}",
            cx.stack,
            cx.region,
            want.address,
            want.str("subnet"),
            want.str("eip")
        );
        let mut id = String::new();
        for _ in 0..3 {
            let token = format!("tsprov-{:016x}", fnv(seed.as_bytes()));
            let mut call = cx
                .aws
                .ec2
                .create_nat_gateway()
                .subnet_id(want.str("subnet"))
                .connectivity_type(ConnectivityType::from(want.str("connectivity_type")))
                .client_token(token)
                .tag_specifications(tag_spec(ResourceType::Natgateway, &want.tags));
            if want.str("connectivity_type") == "public" {
                call = call.allocation_id(want.str("eip"));
            }
            let out = call.send().await.map_err(api("CreateNatGateway"))?;
            let nat = out.nat_gateway();
            id = nat
                .and_then(|n| n.nat_gateway_id())
                .unwrap_or_default()
                .to_string();
            let gone = matches!(
                nat.and_then(|n| n.state()),
                Some(NatGatewayState::Deleting | NatGatewayState::Deleted)
            );
            if !gone {
                break;
            }
            seed = format!("{seed}/{id}");
        }
        let what = format!("{} {id} to become available", want.address);
        wait_until(
            &what,
            cx.wait_timeout(CREATE_TIMEOUT),
            &cx.progress,
            || async {
                match state(cx, &id).await? {
                    Some((NatGatewayState::Available, _)) => Ok(Poll::Done),
                    Some((NatGatewayState::Failed, msg)) => bail!("{id} failed: {msg}"),
                    Some((s, _)) => Ok(Poll::Pending(s.as_str().to_string())),
                    None => Ok(Poll::Pending("not visible yet".into())),
                }
            },
        )
        .await?;
        Ok(Live::from_tags(id, want.tags.clone(), want.attrs.clone())
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
        match cx
            .aws
            .ec2
            .delete_nat_gateway()
            .nat_gateway_id(&live.id)
            .send()
            .await
            .map_err(api("DeleteNatGateway"))
        {
            Err(e) if error_code(&e) == Some("NatGatewayNotFound") => return Ok(()),
            other => other?,
        };
        let what = format!("{} {} to be deleted", live.address, live.id);
        wait_until(
            &what,
            cx.wait_timeout(DELETE_TIMEOUT),
            &cx.progress,
            || async {
                match state(cx, &live.id).await? {
                    None | Some((NatGatewayState::Deleted, _)) => Ok(Poll::Done),
                    Some((s, _)) => Ok(Poll::Pending(s.as_str().to_string())),
                }
            },
        )
        .await
    }
}

/// The gateway's state and failure message; `None` when EC2 does not (or no longer) know it.
async fn state(cx: &Cx, id: &str) -> Result<Option<(NatGatewayState, String)>> {
    let out = eventually(|| async {
        cx.aws
            .ec2
            .describe_nat_gateways()
            .nat_gateway_ids(id)
            .send()
            .await
            .map_err(api("DescribeNatGateways"))
    })
    .await;
    let out = match out {
        Err(e) if error_code(&e) == Some("NatGatewayNotFound") => return Ok(None),
        other => other?,
    };
    Ok(out.nat_gateways().first().and_then(|n| {
        Some((
            n.state()?.clone(),
            n.failure_message().unwrap_or_default().to_string(),
        ))
    }))
}
