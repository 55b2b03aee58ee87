//! What a resource kind accepts in a plan file, Terraform-schema style: each
//! field's type, default and whether changing it forces a replacement. The
//! plan reader checks blocks against it; diff uses it to tell update from replace.

#[derive(Clone, Copy, Debug)]
pub enum Ty {
    Str,
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// An IPv4 or IPv6 CIDR block; in plan files also `{ within = "vpc.x", newbits, netnum }`.
    Cidr,
    /// A reference to a resource of one of these kinds (any kind when empty), written `"kind.name"`.
    Ref(&'static [&'static str]),
    Enum(&'static [&'static str]),
    List(&'static Ty),
    /// A table with these fields (e.g. one route, one rule).
    Object(&'static [Field]),
    /// A table of strings (labels).
    StrMap,
    /// A JSON document (an IAM policy), written as a TOML table or a JSON string;
    /// kept in canonical form so that equal meaning compares equal.
    Json,
}

#[derive(Clone, Copy, Debug)]
pub enum Default {
    /// The field must be given.
    Required,
    /// The field may be left out and is then not managed.
    None,
    Bool(bool),
    Int(i64),
    /// A string; `${az}` and other variables are expanded as in plan files.
    Str(&'static str),
    EmptyList,
}

#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub default: Default,
    /// Changing it means delete and create again (`-/+` in the plan).
    pub replace: bool,
    /// Compared as a set: order in the plan and in AWS does not matter.
    pub set: bool,
    /// Sent on create but not readable back from AWS's batch read: never compared.
    pub write_only: bool,
    pub doc: &'static str,
}

impl Field {
    pub const fn new(name: &'static str, ty: Ty, doc: &'static str) -> Field {
        Field {
            name,
            ty,
            default: Default::Required,
            replace: false,
            set: false,
            write_only: false,
            doc,
        }
    }
    pub const fn default(mut self, d: Default) -> Field {
        self.default = d;
        self
    }
    pub const fn replace(mut self) -> Field {
        self.replace = true;
        self
    }
    pub const fn set(mut self) -> Field {
        self.set = true;
        self
    }
    pub const fn write_only(mut self) -> Field {
        self.write_only = true;
        self
    }
}

impl Ty {
    /// In a live value of this type: each AWS id it holds that refers to another
    /// resource, with the kinds that resource may be of.
    pub fn live_refs<'a>(
        &self,
        v: &'a crate::model::Value,
        out: &mut Vec<(&'static [&'static str], &'a str)>,
    ) {
        use crate::model::Value;
        match (self, v) {
            (Ty::Ref(kinds), Value::Str(id)) => out.push((kinds, id)),
            (Ty::List(inner), Value::List(items)) => {
                items.iter().for_each(|i| inner.live_refs(i, out))
            }
            (Ty::Object(fields), Value::Map(m)) => {
                for f in fields.iter() {
                    if let Some(v) = m.get(f.name) {
                        f.ty.live_refs(v, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// How the type reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Ty::Str => "a string".into(),
            Ty::Int { min, max } => format!("an integer from {min} to {max}"),
            Ty::Bool => "true or false".into(),
            Ty::Cidr => "a CIDR block such as \"10.0.0.0/16\"".into(),
            Ty::Ref([]) => "a reference \"<kind>.<name>\"".into(),
            Ty::Ref(kinds) => format!(
                "a reference to {}",
                kinds
                    .iter()
                    .map(|k| format!("\"{k}.<name>\""))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Ty::Enum(vals) => format!("one of {}", vals.join(", ")),
            Ty::List(inner) => format!("a list of {}", inner.describe()),
            Ty::StrMap => "a table of strings".into(),
            Ty::Json => "a policy document (a table, or a JSON string)".into(),
            Ty::Object(fields) => format!(
                "a table with {}",
                fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}
