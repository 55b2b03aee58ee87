//! Desired vs live -> create / update in place / replace / delete / no-op, at
//! attribute level. Generic over kinds: each kind's schema says which fields
//! force a replacement and which compare as sets.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::graph::Graph;
use crate::kinds::{self, Live};
use crate::model::{Address, Resource, Value};

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
        if live_by_address.insert(&l.address, l).is_some()
            && kinds::by_name(&l.address.kind).is_some()
        {
            changes.push(delete(l));
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
            });
            continue;
        };
        let mut attributes = Vec::new();
        for field in kind.fields() {
            let Some(want_value) = want.attrs.get(field.name) else {
                continue;
            };
            let new = canonical(want_value.resolve(&id_of), field.set);
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
        if kind.taggable() && tags_value(&want.tags) != tags_value(&have.tags) {
            attributes.push(AttrChange {
                name: "tags".into(),
                old: Some(tags_value(&have.tags)),
                new: Some(tags_value(&want.tags)),
                forces_replacement: false,
                added: vec![],
                removed: vec![],
            });
        }
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
        });
    }
    for l in live_by_address.values() {
        if !by_address.contains_key(&l.address) && kinds::by_name(&l.address.kind).is_some() {
            changes.push(delete(l));
        }
    }
    changes
}

fn delete(l: &Live) -> Change {
    Change {
        address: l.address.clone(),
        action: Action::Delete,
        id: Some(l.id.clone()),
        attributes: vec![],
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub replace: usize,
    pub destroy: usize,
}

impl Summary {
    pub fn of<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Summary {
        let mut s = Summary::default();
        for c in changes {
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
