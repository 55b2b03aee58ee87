//! The typed model a plan file turns into: one `Stack` with, per region, the
//! resources it declares after variables, per-AZ expansion and defaults.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::source::Span;

/// `kind.name` or `kind.name[index]` (one instance of a per-AZ resource).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Address {
    pub kind: String,
    pub name: String,
    pub index: Option<usize>,
}

impl Address {
    pub fn new(kind: &str, name: &str, index: Option<usize>) -> Self {
        Address {
            kind: kind.to_string(),
            name: name.to_string(),
            index,
        }
    }

    /// Parses `kind.name` or `kind.name[3]`.
    pub fn parse(text: &str) -> Option<Address> {
        let (kind, rest) = text.split_once('.')?;
        let (name, index) = match rest.split_once('[') {
            Some((name, idx)) => (name, Some(idx.strip_suffix(']')?.parse().ok()?)),
            None => (rest, None),
        };
        let ident_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        (ident_ok(kind) && ident_ok(name)).then(|| Address::new(kind, name, index))
    }

    /// The block this instance comes from: `subnet.public[1]` -> `subnet.public`.
    pub fn block(&self) -> Address {
        Address::new(&self.kind, &self.name, None)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}.{}[{}]", self.kind, self.name, i),
            None => write!(f, "{}.{}", self.kind, self.name),
        }
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Address {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Address::parse(&s).ok_or_else(|| format!("not a resource address: {s:?}"))
    }
}

/// An attribute value, desired or live. `Ref` only occurs in desired state: it
/// names another resource whose AWS id is filled in at diff/apply time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Ref(Address),
    /// A value only AWS can tell, after the referenced resource is created.
    Unknown,
}

/// JSON form: plain values as themselves, `{"ref": "vpc.main"}`, `{"unknown": true}`.
impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Str(v) => s.serialize_str(v),
            Value::List(l) => l.serialize(s),
            Value::Map(m) => m.serialize(s),
            Value::Ref(a) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("ref", &a.to_string())?;
                m.end()
            }
            Value::Unknown => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("unknown", &true)?;
                m.end()
            }
        }
    }
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_list(&self) -> &[Value] {
        match self {
            Value::List(l) => l,
            _ => &[],
        }
    }
    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Every address this value refers to, nested lists and maps included.
    pub fn refs(&self, out: &mut Vec<Address>) {
        match self {
            Value::Ref(a) => out.push(a.clone()),
            Value::List(l) => l.iter().for_each(|v| v.refs(out)),
            Value::Map(m) => m.values().for_each(|v| v.refs(out)),
            _ => {}
        }
    }

    /// Replaces references by the referenced resource's id, or `Unknown`.
    pub fn resolve(&self, id_of: &dyn Fn(&Address) -> Option<String>) -> Value {
        match self {
            Value::Ref(a) => id_of(a).map(Value::Str).unwrap_or(Value::Unknown),
            Value::List(l) => Value::List(l.iter().map(|v| v.resolve(id_of)).collect()),
            Value::Map(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.resolve(id_of)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    pub fn contains_unknown(&self) -> bool {
        match self {
            Value::Unknown => true,
            Value::List(l) => l.iter().any(Value::contains_unknown),
            Value::Map(m) => m.values().any(Value::contains_unknown),
            _ => false,
        }
    }

    /// Plan-output form: `"text"`, `42`, `true`, `[..]`, `{k = v}`.
    pub fn render(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::List(l) => format!(
                "[{}]",
                l.iter().map(Value::render).collect::<Vec<_>>().join(", ")
            ),
            Value::Map(m) => format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, v)| format!("{k} = {}", v.render()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Ref(a) => a.to_string(),
            Value::Unknown => "(known after apply)".to_string(),
        }
    }
}

pub type Attrs = BTreeMap<String, Value>;

/// One resource instance as the plan wants it in one region.
#[derive(Clone, Debug)]
pub struct Resource {
    pub address: Address,
    pub region: String,
    /// Every schema field, with defaults filled in; references as `Value::Ref`.
    pub attrs: Attrs,
    /// The tags the resource must carry: stack tags, its own, Name and the ownership tags.
    pub tags: BTreeMap<String, String>,
    /// Where the block starts in the plan file, for messages.
    pub span: Span,
    /// Where each field's value stands, for messages about that value.
    pub field_spans: BTreeMap<String, Span>,
    /// Explicit ordering (`depends_on = [...]`) besides the references in attributes.
    pub depends_on: Vec<Address>,
    /// SOC 2 controls this resource is exempt from, with the reason (`soc2_exceptions`).
    pub exceptions: BTreeMap<String, String>,
}

impl Resource {
    /// The place of a field's value, or of the block when the field was defaulted.
    pub fn span_of(&self, field: &str) -> Span {
        self.field_spans
            .get(field)
            .cloned()
            .unwrap_or_else(|| self.span.clone())
    }
}

impl Resource {
    pub fn dependencies(&self) -> Vec<Address> {
        let mut out = self.depends_on.clone();
        for v in self.attrs.values() {
            v.refs(&mut out);
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The whole plan after expansion.
#[derive(Clone, Debug)]
pub struct Stack {
    pub name: String,
    pub file: String,
    /// Region name -> resources, in the order the plan declares them.
    pub regions: BTreeMap<String, Vec<Resource>>,
    /// A fingerprint of the plan file contents, for saved plans.
    pub source_hash: u64,
}

pub const TAG_STACK: &str = "tsprov:stack";
pub const TAG_ADDRESS: &str = "tsprov:address";
