//! `security_group` and its rules. A plan block `[security_group.x]` with
//! `ingress`/`egress` becomes two resources: the group itself and
//! `security_group_rules.x`, so that groups whose rules name each other (EKS
//! cluster <-> nodes) are created first and their rules after, without a cycle.

use std::collections::BTreeMap;

use anyhow::Result;
use async_trait::async_trait;
use aws_sdk_ec2::types::{
    IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroup as AwsGroup, UserIdGroupPair,
};

use super::ec2::{stack_filter, tag_spec, tags_of, update_tags};
use super::{Cx, Desired, Kind, Live};
use crate::aws::{api, error_code, eventually, while_dependency_violation};
use crate::model::{Address, Attrs, Resource, Value};
use crate::plan::source::Diagnostic;
use crate::schema::{Default, Field, Ty};

pub struct SecurityGroup;
pub struct SecurityGroupRules;

const RULE: &[Field] = &[
    Field::new(
        "protocol",
        Ty::Enum(&["tcp", "udp", "icmp", "all"]),
        "IP protocol",
    )
    .default(Default::Str("tcp")),
    Field::new(
        "port",
        Ty::Int { min: 0, max: 65535 },
        "a single port (sets from_port and to_port)",
    )
    .default(Default::None),
    Field::new(
        "from_port",
        Ty::Int {
            min: -1,
            max: 65535,
        },
        "first port of a range",
    )
    .default(Default::None),
    Field::new(
        "to_port",
        Ty::Int {
            min: -1,
            max: 65535,
        },
        "last port of a range",
    )
    .default(Default::None),
    Field::new(
        "cidr",
        Ty::Cidr,
        "an IPv4 or IPv6 source (ingress) or destination (egress)",
    )
    .default(Default::None),
    Field::new(
        "security_group",
        Ty::Ref(&["security_group"]),
        "another group as source or destination",
    )
    .default(Default::None),
    Field::new("description", Ty::Str, "why the rule exists").default(Default::None),
];

const GROUP_FIELDS: &[Field] = &[
    Field::new("vpc", Ty::Ref(&["vpc"]), "the VPC it belongs to").replace(),
    Field::new(
        "description",
        Ty::Str,
        "the group's description (AWS cannot change it)",
    )
    .default(Default::Str("Managed by tsprov"))
    .replace(),
    Field::new("ingress", Ty::List(&Ty::Object(RULE)), "inbound rules")
        .default(Default::EmptyList)
        .set(),
    Field::new(
        "egress",
        Ty::List(&Ty::Object(RULE)),
        "outbound rules; left out: all traffic out, as AWS creates it",
    )
    .default(Default::None)
    .set(),
];

const RULES_FIELDS: &[Field] = &[
    Field::new(
        "group",
        Ty::Ref(&["security_group"]),
        "the group the rules belong to",
    )
    .replace(),
    Field::new("ingress", Ty::List(&Ty::Object(RULE)), "inbound rules")
        .default(Default::EmptyList)
        .set(),
    Field::new("egress", Ty::List(&Ty::Object(RULE)), "outbound rules")
        .default(Default::EmptyList)
        .set(),
];

/// One rule in the form both the plan and AWS reduce to: protocol, ports
/// (absent for all protocols), one peer, and the description when given.
fn normalize(rule: &Value) -> Value {
    let Some(m) = rule.as_map() else {
        return rule.clone();
    };
    let mut out = BTreeMap::new();
    let protocol = match m.get("protocol").and_then(Value::as_str) {
        Some("all") | Some("-1") => "-1",
        Some(p) => p,
        None => "tcp",
    };
    out.insert("protocol".to_string(), Value::str(protocol));
    if protocol != "-1" {
        let from = m
            .get("port")
            .or(m.get("from_port"))
            .cloned()
            .unwrap_or(Value::Int(-1));
        let to = m
            .get("port")
            .or(m.get("to_port"))
            .cloned()
            .unwrap_or(from.clone());
        out.insert("from_port".into(), from);
        out.insert("to_port".into(), to);
    }
    for key in ["cidr", "security_group", "description"] {
        if let Some(v) = m.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Value::Map(out)
}

fn all_traffic_out() -> Value {
    let mut m = BTreeMap::new();
    m.insert("protocol".to_string(), Value::str("-1"));
    m.insert("cidr".to_string(), Value::str("0.0.0.0/0"));
    Value::Map(m)
}

#[async_trait]
impl Kind for SecurityGroup {
    fn name(&self) -> &'static str {
        "security_group"
    }
    fn fields(&self) -> &'static [Field] {
        GROUP_FIELDS
    }

    fn expand(&self, mut group: Resource) -> Vec<Resource> {
        let normalized = |v: Option<Value>| {
            Value::List(
                v.map(|l| l.as_list().iter().map(normalize).collect())
                    .unwrap_or_default(),
            )
        };
        let ingress = normalized(group.attrs.remove("ingress"));
        let egress = match group.attrs.remove("egress") {
            Some(e) => normalized(Some(e)),
            None => Value::List(vec![all_traffic_out()]),
        };
        let mut attrs = Attrs::new();
        attrs.insert("group".into(), Value::Ref(group.address.clone()));
        attrs.insert("ingress".into(), ingress);
        attrs.insert("egress".into(), egress);
        let rules = Resource {
            address: Address::new(
                "security_group_rules",
                &group.address.name,
                group.address.index,
            ),
            region: group.region.clone(),
            attrs,
            tags: BTreeMap::new(),
            span: group.span.clone(),
            field_spans: group.field_spans.clone(),
            depends_on: vec![],
            exceptions: group.exceptions.clone(),
        };
        vec![group, rules]
    }

    async fn discover(&self, cx: &Cx) -> Result<Vec<Live>> {
        let groups = cx
            .aws
            .ec2
            .describe_security_groups()
            .filters(stack_filter(&cx.stack))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(api("DescribeSecurityGroups"))?;
        // One Describe call serves both kinds: the group and its rules.
        let mut out = Vec::new();
        for g in &groups {
            let id = g.group_id().unwrap_or_default();
            let mut attrs = Attrs::new();
            attrs.insert("vpc".into(), Value::str(g.vpc_id().unwrap_or_default()));
            attrs.insert(
                "description".into(),
                Value::str(g.description().unwrap_or_default()),
            );
            let Some(live) = Live::from_tags(id, tags_of(g.tags()), attrs) else {
                continue;
            };
            out.push(rules_live(&live.address, g));
            out.push(live);
        }
        Ok(out)
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        let out = cx
            .aws
            .ec2
            .create_security_group()
            .group_name(group_name(&cx.stack, &want.address))
            .description(want.str("description"))
            .vpc_id(want.str("vpc"))
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, &want.tags))
            .send()
            .await
            .map_err(api("CreateSecurityGroup"))?;
        Ok(Live::from_tags(
            out.group_id().unwrap_or_default(),
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
        let result = while_dependency_violation(cx.dependency_timeout, || async {
            cx.aws
                .ec2
                .delete_security_group()
                .group_id(&live.id)
                .send()
                .await
                .map_err(api("DeleteSecurityGroup"))
                .map(|_| ())
        })
        .await;
        match result {
            Err(e) if error_code(&e) == Some("InvalidGroup.NotFound") => Ok(()),
            other => other,
        }
    }
}

/// Unique in its VPC and deterministic: `<stack>-<name>[-<index>]`.
fn group_name(stack: &str, address: &Address) -> String {
    match address.index {
        Some(i) => format!("{stack}-{}-{i}", address.name),
        None => format!("{stack}-{}", address.name),
    }
}

fn rules_live(group_address: &Address, g: &AwsGroup) -> Live {
    let id = g.group_id().unwrap_or_default();
    let mut attrs = Attrs::new();
    attrs.insert("group".into(), Value::str(id));
    attrs.insert("ingress".into(), Value::List(flatten(g.ip_permissions())));
    attrs.insert(
        "egress".into(),
        Value::List(flatten(g.ip_permissions_egress())),
    );
    Live {
        address: Address::new(
            "security_group_rules",
            &group_address.name,
            group_address.index,
        ),
        // Its own id, so that no two live resources share one; calls use the group's.
        id: format!("{id}#rules"),
        attrs,
        // The group's: ownership checks read them; rules are not tagged themselves.
        tags: tags_of(g.tags()),
        handles: BTreeMap::new(),
    }
}

fn group_id(rules: &Live) -> &str {
    rules
        .attrs
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// AWS groups peers under one permission per protocol and ports; tsprov compares one rule per peer.
fn flatten(perms: &[IpPermission]) -> Vec<Value> {
    let mut out = Vec::new();
    for p in perms {
        let base = |peer: (&str, &str), description: Option<&str>| {
            let mut m = BTreeMap::new();
            let protocol = p.ip_protocol().unwrap_or("-1");
            m.insert("protocol".to_string(), Value::str(protocol));
            if protocol != "-1" {
                m.insert(
                    "from_port".into(),
                    Value::Int(p.from_port().unwrap_or(-1) as i64),
                );
                m.insert(
                    "to_port".into(),
                    Value::Int(p.to_port().unwrap_or(-1) as i64),
                );
            }
            m.insert(peer.0.to_string(), Value::str(peer.1));
            if let Some(d) = description.filter(|d| !d.is_empty()) {
                m.insert("description".into(), Value::str(d));
            }
            Value::Map(m)
        };
        for r in p.ip_ranges() {
            out.push(base(
                ("cidr", r.cidr_ip().unwrap_or_default()),
                r.description(),
            ));
        }
        for r in p.ipv6_ranges() {
            out.push(base(
                ("cidr", r.cidr_ipv6().unwrap_or_default()),
                r.description(),
            ));
        }
        for pair in p.user_id_group_pairs() {
            out.push(base(
                ("security_group", pair.group_id().unwrap_or_default()),
                pair.description(),
            ));
        }
    }
    out
}

/// The AWS form of one normalized rule.
fn permission(rule: &Value) -> IpPermission {
    let m = rule.as_map().cloned().unwrap_or_default();
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let mut p = IpPermission::builder().ip_protocol(s("protocol").unwrap_or_else(|| "-1".into()));
    if let (Some(from), Some(to)) = (
        m.get("from_port").and_then(Value::as_int),
        m.get("to_port").and_then(Value::as_int),
    ) {
        p = p.from_port(from as i32).to_port(to as i32);
    }
    let description = s("description");
    if let Some(cidr) = s("cidr") {
        p = if cidr.contains(':') {
            p.ipv6_ranges(
                Ipv6Range::builder()
                    .cidr_ipv6(cidr)
                    .set_description(description)
                    .build(),
            )
        } else {
            p.ip_ranges(
                IpRange::builder()
                    .cidr_ip(cidr)
                    .set_description(description)
                    .build(),
            )
        };
    } else if let Some(group) = s("security_group") {
        p = p.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(group)
                .set_description(description)
                .build(),
        );
    }
    p.build()
}

#[async_trait]
impl Kind for SecurityGroupRules {
    fn name(&self) -> &'static str {
        "security_group_rules"
    }
    fn fields(&self) -> &'static [Field] {
        RULES_FIELDS
    }
    fn taggable(&self) -> bool {
        false
    }
    fn internal(&self) -> bool {
        true
    }

    fn check(&self, r: &Resource, _region: &[Resource], diags: &mut Vec<Diagnostic>) {
        for direction in ["ingress", "egress"] {
            for rule in r
                .attrs
                .get(direction)
                .map(Value::as_list)
                .unwrap_or_default()
            {
                let Some(m) = rule.as_map() else { continue };
                let what = format!("{}.{direction}: rule {}", r.address, rule.render());
                if m.contains_key("cidr") == m.contains_key("security_group") {
                    diags.push(Diagnostic::new(r.span_of(direction), format!("{what} needs exactly one peer")).help("set either cidr = \"...\" or security_group = \"security_group.<name>\""));
                }
                let proto = m
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let (from, to) = (
                    m.get("from_port").and_then(Value::as_int),
                    m.get("to_port").and_then(Value::as_int),
                );
                if matches!(proto, "tcp" | "udp")
                    && (from.is_none_or(|f| f < 0) || to.is_none_or(|t| t < 0))
                {
                    diags.push(
                        Diagnostic::new(r.span_of(direction), format!("{what} has no port"))
                            .help("set port = N, or from_port and to_port"),
                    );
                }
                if let (Some(f), Some(t)) = (from, to) {
                    if f > t {
                        diags.push(
                            Diagnostic::new(
                                r.span_of(direction),
                                format!("{what}: from_port {f} is above to_port {t}"),
                            )
                            .help("from_port <= to_port"),
                        );
                    }
                }
            }
        }
    }

    async fn discover(&self, _cx: &Cx) -> Result<Vec<Live>> {
        // Read together with their group by SecurityGroup::discover.
        Ok(Vec::new())
    }

    async fn create(&self, cx: &Cx, want: &Desired) -> Result<Live> {
        // A new group holds AWS's default egress rule: start from what is there.
        let group = want.str("group").to_string();
        let out = eventually(|| async {
            cx.aws
                .ec2
                .describe_security_groups()
                .group_ids(&group)
                .send()
                .await
                .map_err(api("DescribeSecurityGroups"))
        })
        .await?;
        let aws_group = out
            .security_groups()
            .first()
            .ok_or_else(|| anyhow::anyhow!("security group {group} disappeared"))?;
        let live = rules_live(&want.address, aws_group);
        self.update(cx, want, &live, &["ingress".into(), "egress".into()])
            .await?;
        let mut created = live;
        created.attrs = want.attrs.clone();
        Ok(created)
    }

    async fn update(&self, cx: &Cx, want: &Desired, live: &Live, changed: &[String]) -> Result<()> {
        for direction in ["ingress", "egress"] {
            if !changed.iter().any(|c| c == direction) {
                continue;
            }
            let have = live
                .attrs
                .get(direction)
                .map(Value::as_list)
                .unwrap_or_default();
            let wanted = want
                .attrs
                .get(direction)
                .map(Value::as_list)
                .unwrap_or_default();
            let add: Vec<IpPermission> = wanted
                .iter()
                .filter(|r| !have.contains(r))
                .map(permission)
                .collect();
            let remove: Vec<IpPermission> = have
                .iter()
                .filter(|r| !wanted.contains(r))
                .map(permission)
                .collect();
            // Revoke first: a rule whose description changed is the same rule to AWS.
            revoke(cx, group_id(live), direction, remove, true).await?;
            authorize(cx, group_id(live), direction, add).await?;
        }
        Ok(())
    }

    async fn delete(&self, cx: &Cx, live: &Live) -> Result<()> {
        for direction in ["ingress", "egress"] {
            let rules: Vec<IpPermission> = live
                .attrs
                .get(direction)
                .map(Value::as_list)
                .unwrap_or_default()
                .iter()
                .map(permission)
                .collect();
            match revoke(cx, group_id(live), direction, rules, false).await {
                // The group is gone, and its rules with it.
                Err(e) if error_code(&e) == Some("InvalidGroup.NotFound") => return Ok(()),
                other => other?,
            }
        }
        Ok(())
    }
}

async fn authorize(cx: &Cx, group: &str, direction: &str, perms: Vec<IpPermission>) -> Result<()> {
    if perms.is_empty() {
        return Ok(());
    }
    let result = eventually(|| async {
        if direction == "ingress" {
            cx.aws
                .ec2
                .authorize_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(perms.clone()))
                .send()
                .await
                .map_err(api("AuthorizeSecurityGroupIngress"))
                .map(|_| ())
        } else {
            cx.aws
                .ec2
                .authorize_security_group_egress()
                .group_id(group)
                .set_ip_permissions(Some(perms.clone()))
                .send()
                .await
                .map_err(api("AuthorizeSecurityGroupEgress"))
                .map(|_| ())
        }
    })
    .await;
    match result {
        Err(e) if error_code(&e) == Some("InvalidPermission.Duplicate") => Ok(()),
        other => other,
    }
}

/// Revokes rules; one already gone is fine. A group made moments ago may not be known
/// yet: `wait_for_group` waits for it rather than take its NotFound for "nothing to
/// revoke" (the default egress rule would stay).
async fn revoke(
    cx: &Cx,
    group: &str,
    direction: &str,
    perms: Vec<IpPermission>,
    wait_for_group: bool,
) -> Result<()> {
    if perms.is_empty() {
        return Ok(());
    }
    let once = || async {
        let result = if direction == "ingress" {
            cx.aws
                .ec2
                .revoke_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(perms.clone()))
                .send()
                .await
                .map_err(api("RevokeSecurityGroupIngress"))
                .map(|_| ())
        } else {
            cx.aws
                .ec2
                .revoke_security_group_egress()
                .group_id(group)
                .set_ip_permissions(Some(perms.clone()))
                .send()
                .await
                .map_err(api("RevokeSecurityGroupEgress"))
                .map(|_| ())
        };
        match result {
            Err(e) if error_code(&e) == Some("InvalidPermission.NotFound") => Ok(()),
            other => other,
        }
    };
    if wait_for_group {
        eventually(once).await
    } else {
        once().await
    }
}
