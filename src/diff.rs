//! Desired vs live -> create / update in place / replace / delete / no-op, at
//! attribute level. Generic over kinds: each kind's schema says which fields
//! force a replacement and which compare as sets.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::graph::Graph;
use crate::kinds::{self, Kind, Live};
use crate::model::{Address, Attrs, Resource, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttrChange {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
    pub forces_replacement: bool,
    /// For set-like lists: what is added and removed, instead of both whole lists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub address: Address,
    pub action: Action,
    /// The live resource's id (update, replace, delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub attributes: Vec<AttrChange>,
    /// Why this change may not run (it would destroy data); apply refuses the whole plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// Sorts set-like lists so that order never counts as a difference.
fn canonical(v: Value, set: bool) -> Value {
    match v {
        Value::List(mut l) if set => {
            l.sort();
            Value::List(l)
        }
        other => other,
    }
}

fn tags_value(tags: &BTreeMap<String, String>) -> Value {
    Value::Map(
        tags.iter()
            .filter(|(k, _)| !k.starts_with("aws:"))
            .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
            .collect(),
    )
}

/// The changes that bring one region's live resources to the desired ones, dependencies first.
pub fn diff(desired: &[Resource], live: &[Live]) -> Vec<Change> {
    let mut live_by_address: HashMap<&Address, &Live> = HashMap::new();
    let mut changes = Vec::new();
    for l in live {
        // A second live resource with the same address (a create retried after a crash) goes.
        // The first one found stays.
        if live_by_address.contains_key(&l.address) {
            if kinds::by_name(&l.address.kind).is_some() {
                changes.push(delete(l));
            }
        } else {
            live_by_address.insert(&l.address, l);
        }
    }
    let graph = Graph::build(desired);
    let order = graph.order().expect("plans are checked for cycles");
    let by_address: HashMap<&Address, &Resource> =
        desired.iter().map(|r| (&r.address, r)).collect();
    let mut renewed: HashSet<Address> = HashSet::new();
    for address in &order {
        let want = by_address[address];
        let kind = kinds::by_name(&address.kind).expect("plans only hold known kinds");
        let id_of = |a: &Address| {
            if renewed.contains(a) {
                None
            } else {
                live_by_address.get(a).map(|l| l.id.clone())
            }
        };
        let Some(have) = live_by_address.get(address) else {
            let attributes = want
                .attrs
                .iter()
                .map(|(name, v)| AttrChange {
                    name: name.clone(),
                    old: None,
                    new: Some(v.resolve(&id_of)),
                    forces_replacement: false,
                    added: vec![],
                    removed: vec![],
                })
                .collect();
            renewed.insert(address.clone());
            changes.push(Change {
                address: address.clone(),
                action: Action::Create,
                id: None,
                attributes,
                blocked: None,
            });
            continue;
        };
        let resolved: Attrs = want
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.resolve(&id_of)))
            .collect();
        let attributes = attribute_changes(kind, &resolved, &want.tags, have);
        if attributes.is_empty() {
            continue;
        }
        let action = if attributes.iter().any(|a| a.forces_replacement) {
            renewed.insert(address.clone());
            Action::Replace
        } else {
            Action::Update
        };
        changes.push(Change {
            address: address.clone(),
            action,
            id: Some(have.id.clone()),
            attributes,
            blocked: None,
        });
    }
    for l in live_by_address.values() {
        if !by_address.contains_key(&l.address) && kinds::by_name(&l.address.kind).is_some() {
            changes.push(delete(l));
        }
    }
    changes
}

/// The attribute changes that turn `have` into `want` (references resolved to ids).
pub fn attribute_changes(
    kind: &dyn Kind,
    want: &Attrs,
    want_tags: &BTreeMap<String, String>,
    have: &Live,
) -> Vec<AttrChange> {
    let mut attributes = Vec::new();
    for field in kind.fields().iter().filter(|f| !f.write_only) {
        let Some(want_value) = want.get(field.name) else {
            continue;
        };
        let new = canonical(want_value.clone(), field.set);
        let old = have
            .attrs
            .get(field.name)
            .cloned()
            .map(|v| canonical(v, field.set));
        if old.as_ref() == Some(&new) {
            continue;
        }
        let (added, removed) = match (&old, &new, field.set) {
            (Some(Value::List(o)), Value::List(n), true) => (
                n.iter().filter(|v| !o.contains(v)).cloned().collect(),
                o.iter().filter(|v| !n.contains(v)).cloned().collect(),
            ),
            _ => (vec![], vec![]),
        };
        attributes.push(AttrChange {
            name: field.name.to_string(),
            old,
            new: Some(new),
            forces_replacement: field.replace,
            added,
            removed,
        });
    }
    if kind.taggable() && tags_value(want_tags) != tags_value(&have.tags) {
        attributes.push(AttrChange {
            name: "tags".into(),
            old: Some(tags_value(&have.tags)),
            new: Some(tags_value(want_tags)),
            forces_replacement: false,
            added: vec![],
            removed: vec![],
        });
    }
    attributes
}

/// Marks the deletes and replacements that would destroy data (a kind's guard) and
/// that the run did not allow with `--allow-destroy ADDRESS`; protected resources
/// (deletion protection on) stay blocked whatever is allowed.
pub fn block_data_loss(changes: &mut [Change], live: &[Live], allowed: &[String]) {
    for c in changes
        .iter_mut()
        .filter(|c| matches!(c.action, Action::Delete | Action::Replace))
    {
        let (Some(kind), Some(l)) = (
            kinds::by_name(&c.address.kind),
            live.iter()
                .find(|l| l.address == c.address && Some(&l.id) == c.id.as_ref()),
        ) else {
            continue;
        };
        c.blocked = match kind.deletion_guard(l) {
            Some(kinds::Guard::Protected(why)) => Some(why),
            Some(kinds::Guard::HoldsData(what))
                if !allowed.iter().any(|a| a == &c.address.to_string()) =>
            {
                Some(format!(
                    "{what}; pass --allow-destroy {} to allow it",
                    c.address
                ))
            }
            _ => None,
        };
    }
}

fn delete(l: &Live) -> Change {
    Change {
        address: l.address.clone(),
        action: Action::Delete,
        id: Some(l.id.clone()),
        attributes: vec![],
        blocked: None,
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub replace: usize,
    pub destroy: usize,
    /// Changes that may not run without `--allow-destroy` (counted in the others too).
    pub blocked: usize,
}

impl Summary {
    pub fn of<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Summary {
        let mut s = Summary::default();
        for c in changes {
            s.blocked += c.blocked.is_some() as usize;
            match c.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.destroy += 1,
            }
        }
        s
    }
    pub fn is_empty(&self) -> bool {
        *self == Summary::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attrs;

    fn resource(address: &str, attrs: &[(&str, Value)]) -> Resource {
        let address = Address::parse(address).unwrap();
        let mut tags = BTreeMap::new();
        tags.insert("tsprov:address".to_string(), address.to_string());
        Resource {
            address,
            region: "eu-west-1".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            tags,
            span: 0..0,
            field_spans: BTreeMap::new(),
            depends_on: vec![],
            exceptions: BTreeMap::new(),
        }
    }

    fn live(r: &Resource, id: &str, attrs: &[(&str, Value)]) -> Live {
        let attrs: Attrs = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Live::from_tags(id, r.tags.clone(), attrs).unwrap()
    }

    fn vpc_ref() -> Value {
        Value::Ref(Address::parse("vpc.main").unwrap())
    }

    fn network() -> Vec<Resource> {
        vec![
            resource(
                "vpc.main",
                &[
                    ("cidr_block", Value::str("10.0.0.0/16")),
                    ("enable_dns_support", Value::Bool(true)),
                    ("enable_dns_hostnames", Value::Bool(true)),
                ],
            ),
            resource(
                "subnet.a",
                &[
                    ("vpc", vpc_ref()),
                    ("cidr_block", Value::str("10.0.1.0/24")),
                    ("availability_zone", Value::str("eu-west-1a")),
                    ("map_public_ip_on_launch", Value::Bool(false)),
                ],
            ),
        ]
    }

    fn live_network(want: &[Resource]) -> Vec<Live> {
        vec![
            live(
                &want[0],
                "vpc-1",
                &[
                    ("cidr_block", Value::str("10.0.0.0/16")),
                    ("enable_dns_support", Value::Bool(true)),
                    ("enable_dns_hostnames", Value::Bool(true)),
                ],
            ),
            live(
                &want[1],
                "subnet-1",
                &[
                    ("vpc", Value::str("vpc-1")),
                    ("cidr_block", Value::str("10.0.1.0/24")),
                    ("availability_zone", Value::str("eu-west-1a")),
                    ("map_public_ip_on_launch", Value::Bool(false)),
                ],
            ),
        ]
    }

    fn action_of(changes: &[Change], address: &str) -> Option<Action> {
        changes
            .iter()
            .find(|c| c.address.to_string() == address)
            .map(|c| c.action)
    }

    #[test]
    fn converged_state_has_no_changes() {
        let want = network();
        assert!(diff(&want, &live_network(&want)).is_empty());
    }

    #[test]
    fn everything_missing_is_created_in_dependency_order() {
        let changes = diff(&network(), &[]);
        assert_eq!(
            changes
                .iter()
                .map(|c| c.address.to_string())
                .collect::<Vec<_>>(),
            ["vpc.main", "subnet.a"]
        );
        let vpc_attr = changes[1]
            .attributes
            .iter()
            .find(|a| a.name == "vpc")
            .unwrap();
        assert_eq!(vpc_attr.new, Some(Value::Unknown));
    }

    #[test]
    fn updatable_attribute_and_tags_change_in_place() {
        let mut want = network();
        let have = live_network(&want);
        want[1]
            .attrs
            .insert("map_public_ip_on_launch".into(), Value::Bool(true));
        want[0].tags.insert("Team".into(), "sre".into());
        let changes = diff(&want, &have);
        assert_eq!(action_of(&changes, "subnet.a"), Some(Action::Update));
        assert_eq!(action_of(&changes, "vpc.main"), Some(Action::Update));
        let tags = &changes
            .iter()
            .find(|c| c.address.kind == "vpc")
            .unwrap()
            .attributes[0];
        assert_eq!(tags.name, "tags");
    }

    #[test]
    fn replacing_a_resource_replaces_what_cannot_follow_it() {
        let mut want = network();
        want[0]
            .attrs
            .insert("cidr_block".into(), Value::str("10.1.0.0/16"));
        let changes = diff(&want, &live_network(&want));
        assert_eq!(action_of(&changes, "vpc.main"), Some(Action::Replace));
        // The subnet's vpc is unknown until the new VPC exists, and vpc forces replacement.
        let subnet = changes.iter().find(|c| c.address.kind == "subnet").unwrap();
        assert_eq!(subnet.action, Action::Replace);
        assert!(subnet
            .attributes
            .iter()
            .any(|a| a.name == "vpc" && a.forces_replacement));
    }

    #[test]
    fn undeclared_live_resource_is_deleted_and_duplicates_go() {
        let want = network();
        let mut have = live_network(&want);
        let mut dup = have[1].clone();
        dup.id = "subnet-2".into();
        have.push(dup);
        let changes = diff(&want[..1], &have);
        let deletes: Vec<_> = changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .map(|c| c.id.clone().unwrap())
            .collect();
        assert_eq!(deletes.len(), 2, "{changes:?}");
        assert!(
            deletes.contains(&"subnet-1".to_string()) && deletes.contains(&"subnet-2".to_string())
        );
    }

    #[test]
    fn set_fields_ignore_order() {
        let rt = resource(
            "route_table.a",
            &[
                ("vpc", vpc_ref()),
                (
                    "subnets",
                    Value::List(vec![Value::str("subnet-2"), Value::str("subnet-1")]),
                ),
            ],
        );
        let want = vec![network().remove(0), rt];
        let mut have = vec![live_network(&want)[0].clone()];
        have.push(live(
            &want[1],
            "rtb-1",
            &[
                ("vpc", Value::str("vpc-1")),
                (
                    "subnets",
                    Value::List(vec![Value::str("subnet-1"), Value::str("subnet-2")]),
                ),
                ("routes", Value::List(vec![])),
            ],
        ));
        assert!(diff(&want, &have).is_empty());
    }

    #[test]
    fn summary_counts_each_action() {
        let mut want = network();
        want[0]
            .attrs
            .insert("cidr_block".into(), Value::str("10.1.0.0/16"));
        let s = Summary::of(&diff(&want, &live_network(&want)));
        assert_eq!(
            s,
            Summary {
                add: 0,
                change: 0,
                replace: 2,
                destroy: 0,
                blocked: 0
            }
        );
    }
}
