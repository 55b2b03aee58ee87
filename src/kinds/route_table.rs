//! `route_table`: its routes (to an internet or NAT gateway) and its subnet
//! associations, both updated in place.

use std::collections::BTreeMap;

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_ec2::types::{ResourceType, RouteOrigin};

use super::ec2::{stack_filter, tag_spec, tags_of, update_tags};
use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually, while_dependency_violation};
use crate::model::{Attrs, Resource, Value};
use crate::plan::source::Diagnostic;
use crate::schema::{Default, Field, Ty};

pub struct RouteTable;

const ROUTE: &[Field] = &[
    Field::new(
        "destination",
        Ty::Cidr,
        "the destination range, e.g. 0.0.0.0/0",
    ),
    Field::new(
        "gateway",
        Ty::Ref(&["internet_gateway"]),
        "send to this internet gateway",
    )
    .default(Default::None),
    Field::new(
        "nat_gateway",
        Ty::Ref(&["nat_gateway"]),
        "send to this NAT gateway",
    )
    .default(Default::None),
];

const FIELDS: &[Field] = &[
    Field::new("vpc", Ty::Ref(&["vpc"]), "the VPC it belongs to").replace(),
    Field::new(
        "routes",
        Ty::List(&Ty::Object(ROUTE)),
        "routes besides the VPC's local one",
    )
    .default(Default::EmptyList)
    .set(),
    Field::new(
        "subnets",
        Ty::List(&Ty::Ref(&["subnet"])),
        "subnets associated with it",
    )
    .default(Default::EmptyList)
    .set(),
];

type Routes = BTreeMap<String, Value>;

/// destination -> the whole route, for set arithmetic.
fn routes_by_destination(v: Option<&Value>) -> Routes {
    v.map(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            Some((
                r.as_map()?.get("destination")?.as_str()?.to_string(),
                r.clone(),
            ))
        })
        .collect()
}

fn target(route: &Value, key: &str) -> Option<String> {
    route.as_map()?.get(key)?.as_str().map(str::to_string)
}

#[async_trait]
impl Kind for RouteTable {
    fn name(&self) -> &'static str {
        "route_table"
    }
    fn fields(&self) -> &'static [Field] {
        FIELDS
    }

    fn check(&self, r: &Resource, _region: &[Resource], diags: &mut Vec<Diagnostic>) {
        let mut seen = Vec::new();
        for route in r
            .attrs
            .get("routes")
            .map(Value::as_list)
            .unwrap_or_default()
        {
            let Some(m) = route.as_map() else { continue };
            let dest = m.get("destination").map(Value::render).unwrap_or_default();
            if m.contains_key("gateway") == m.contains_key("nat_gateway") {
                diags.push(
                    Diagnostic::new(r.span_of("routes"), format!("{}: route to {dest} needs exactly one target", r.address))
                        .help("set either gateway = \"internet_gateway.<name>\" or nat_gateway = \"nat_gateway.<name>\""),
                );
            }
            if seen.contains(&dest) {
                diags.push(
                    Diagnostic::new(
                        r.span_of("routes"),
                        format!("{}: two routes to {dest}", r.address),
                    )
                    .help("keep one route per destination"),
                );
            }
            seen.push(dest);
        }
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let tables = cx
            .aws
            .ec2
            .describe_route_tables()
            .filters(stack_filter(&cx.stack))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeRouteTables"))?;
        Ok(tables
            .iter()
            .filter_map(|t| {
                let routes = t
                    .routes()
                    .iter()
                    .filter(|r| r.origin() != Some(&RouteOrigin::CreateRouteTable))
                    .filter_map(|r| {
                        let dest = r
                            .destination_cidr_block()
                            .or(r.destination_ipv6_cidr_block())?;
                        let mut m = BTreeMap::new();
                        m.insert("destination".to_string(), Value::str(dest));
                        match (r.gateway_id(), r.nat_gateway_id()) {
                            (_, Some(nat)) => m.insert("nat_gateway".into(), Value::str(nat)),
                            (Some(gw), _) if gw != "local" => {
                                m.insert("gateway".into(), Value::str(gw))
                            }
                            _ => return None,
                        };
                        Some(Value::Map(m))
                    })
                    .collect();
                let mut subnets = Vec::new();
                let mut handles = BTreeMap::new();
                for a in t.associations().iter().filter(|a| a.main() != Some(true)) {
                    if let (Some(subnet), Some(assoc)) =
                        (a.subnet_id(), a.route_table_association_id())
                    {
                        subnets.push(Value::str(subnet));
                        handles.insert(subnet.to_string(), assoc.to_string());
                    }
                }
                let mut attrs = Attrs::new();
                attrs.insert("vpc".into(), Value::str(t.vpc_id().unwrap_or_default()));
                attrs.insert("routes".into(), Value::List(routes));
                attrs.insert("subnets".into(), Value::List(subnets));
                let mut live = Live::from_tags(
                    t.route_table_id().unwrap_or_default(),
                    tags_of(t.tags()),
                    attrs,
                )?;
                live.handles = handles;
                Some(live)
            })
            .collect())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let out = cx
            .aws
            .ec2
            .create_route_table()
            .vpc_id(want.str("vpc"))
            .tag_specifications(tag_spec(ResourceType::RouteTable, &want.tags))
            .customize()
            .config_override(crate::aws::ec2_once())
            .send()
            .await
            .map_err(api("CreateRouteTable"))?;
        let id = out
            .route_table()
            .and_then(|t| t.route_table_id())
            .unwrap_or_default()
            .to_string();
        let mut live = Live::from_tags(&id, want.tags.clone(), want.attrs.clone())
            .expect("desired tags carry the address");
        live.attrs.insert("routes".into(), Value::List(vec![]));
        live.attrs.insert("subnets".into(), Value::List(vec![]));
        self.update(cx, want, &live, &["routes".into(), "subnets".into()])
            .await?;
        live.attrs = want.attrs.clone();
        Ok(live)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        if changed.iter().any(|c| c == "routes") {
            sync_routes(
                cx,
                &live.id,
                &routes_by_destination(live.attrs.get("routes")),
                &routes_by_destination(want.attrs.get("routes")),
            )
            .await?;
        }
        if changed.iter().any(|c| c == "subnets") {
            let have: Vec<&Value> = live
                .attrs
                .get("subnets")
                .map(Value::as_list)
                .unwrap_or_default()
                .iter()
                .collect();
            let want_list = want
                .attrs
                .get("subnets")
                .map(Value::as_list)
                .unwrap_or_default();
            for subnet in want_list.iter().filter(|s| !have.contains(s)) {
                let subnet = subnet.as_str().unwrap_or_default();
                let associated = eventually(|| async {
                    cx.aws
                        .ec2
                        .associate_route_table()
                        .route_table_id(&live.id)
                        .subnet_id(subnet)
                        .send()
                        .await
                        .map_err(api("AssociateRouteTable"))
                })
                .await;
                match associated {
                    // Associated already: with this table (a call retried after its
                    // answer was lost) it is done; with another, that is an error.
                    Err(e) if error_code(&e) == Some("Resource.AlreadyAssociated") => {
                        if !associated_with(cx, subnet, &live.id).await? {
                            return Err(e);
                        }
                    }
                    other => {
                        other?;
                    }
                }
            }
            for subnet in have.iter().filter(|s| !want_list.contains(s)) {
                if let Some(assoc) = live.handles.get(subnet.as_str().unwrap_or_default()) {
                    disassociate(cx, assoc).await?;
                }
            }
        }
        if changed.iter().any(|c| c == "tags") {
            update_tags(cx, &live.id, &live.tags, &want.tags).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        for assoc in live.handles.values() {
            disassociate(cx, assoc).await?;
        }
        let result = while_dependency_violation(cx.dependency_timeout, || async {
            cx.aws
                .ec2
                .delete_route_table()
                .route_table_id(&live.id)
                .send()
                .await
                .map_err(api("DeleteRouteTable"))
                .map(|_| ())
        })
        .await;
        match result {
            Err(e) if error_code(&e) == Some("InvalidRouteTableID.NotFound") => Ok(()),
            other => other,
        }
    }
}

async fn associated_with(cx: &Cx, subnet: &str, table: &str) -> Result<bool> {
    let out = cx
        .aws
        .ec2
        .describe_route_tables()
        .filters(super::ec2::filter("association.subnet-id", &[subnet]))
        .send()
        .await
        .map_err(api("DescribeRouteTables"))?;
    Ok(out
        .route_tables()
        .iter()
        .any(|t| t.route_table_id() == Some(table)))
}

async fn disassociate(cx: &Cx, assoc: &str) -> Result<()> {
    match cx
        .aws
        .ec2
        .disassociate_route_table()
        .association_id(assoc)
        .send()
        .await
        .map_err(api("DisassociateRouteTable"))
    {
        Err(e) if error_code(&e) == Some("InvalidAssociationID.NotFound") => Ok(()),
        other => other.map(|_| ()),
    }
}

async fn sync_routes(cx: &Cx, table: &str, have: &Routes, want: &Routes) -> Result<()> {
    for (dest, route) in want {
        if have.get(dest) == Some(route) {
            continue;
        }
        let ipv6 = dest.contains(':');
        let (gw, nat) = (target(route, "gateway"), target(route, "nat_gateway"));
        let replace = || async {
            let mut call = cx
                .aws
                .ec2
                .replace_route()
                .route_table_id(table)
                .set_gateway_id(gw.clone())
                .set_nat_gateway_id(nat.clone());
            call = if ipv6 {
                call.destination_ipv6_cidr_block(dest)
            } else {
                call.destination_cidr_block(dest)
            };
            call.send().await.map_err(api("ReplaceRoute")).map(|_| ())
        };
        if have.contains_key(dest) {
            replace().await?;
            continue;
        }
        let created = eventually(|| async {
            let mut call = cx
                .aws
                .ec2
                .create_route()
                .route_table_id(table)
                .set_gateway_id(gw.clone())
                .set_nat_gateway_id(nat.clone());
            call = if ipv6 {
                call.destination_ipv6_cidr_block(dest)
            } else {
                call.destination_cidr_block(dest)
            };
            call.send().await.map_err(api("CreateRoute")).map(|_| ())
        })
        .await;
        match created {
            // There already (a create retried after its answer was lost): make sure of its target.
            Err(e) if error_code(&e) == Some("RouteAlreadyExists") => replace().await?,
            other => other?,
        }
    }
    for dest in have.keys().filter(|d| !want.contains_key(*d)) {
        let mut call = cx.aws.ec2.delete_route().route_table_id(table);
        call = if dest.contains(':') {
            call.destination_ipv6_cidr_block(dest)
        } else {
            call.destination_cidr_block(dest)
        };
        match call.send().await.map_err(api("DeleteRoute")) {
            Err(e) if error_code(&e) == Some("InvalidRoute.NotFound") => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}
