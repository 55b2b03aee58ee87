//! Reads a plan file (TOML) into the typed model, collecting every problem
//! with its place instead of stopping at the first.
//!
//! Shape of a plan file:
//!
//! ```toml
//! [stack]                      # name and tags of the whole stack
//! [vars]                       # values shared by all regions
//! [regions.eu-west-1]          # azs = [...] plus per-region values (override vars)
//! [subnet.private]             # one block per resource: [<kind>.<name>]
//! per_az = true                #   one instance per AZ: subnet.private[0], [1], ...
//! vpc = "vpc.main"             #   typed reference; per-AZ refs match by index
//! cidr_block = { within = "vpc.main", newbits = 4, netnum = 1 }   # netnum + AZ index
//! ```
//!
//! `"${name}"` in a string reads a per-region value, a var, or one of the
//! built-ins `region`, `az`, `index`, `stack`; when the whole string is one
//! `${name}`, the value keeps its type (a bool, a list).

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::source::{suggest, Diagnostic, Span};
use crate::kinds::{self, Kind};
use crate::model::{Address, Attrs, Resource, Stack, Value, TAG_ADDRESS, TAG_STACK};
use crate::schema::{self, Field, Ty};

type Sv<'i> = Spanned<DeValue<'i>>;

/// AWS commercial regions tsprov accepts.
pub const REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-south-1",
    "ap-south-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-east-1",
    "sa-east-1",
    "me-south-1",
    "me-central-1",
    "af-south-1",
    "il-central-1",
];

const BLOCK_META: &[&str] = &["per_az", "regions", "tags", "depends_on", "soc2_exceptions"];
const MAX_VAR_DEPTH: usize = 8;
/// Resource blocks per plan file (each may expand per AZ and region).
pub const MAX_BLOCKS: usize = 5000;

struct RegionDecl<'i> {
    name: String,
    azs: Vec<String>,
    vars: BTreeMap<String, &'i Sv<'i>>,
}

struct Block<'i> {
    kind: &'static dyn Kind,
    name: String,
    span: Span,
    table: &'i DeTable<'i>,
}

/// Per region and instance: what `${...}` and references resolve against.
struct Scope<'a, 'i> {
    stack: &'a str,
    region: &'a RegionDecl<'i>,
    vars: &'a BTreeMap<String, &'i Sv<'i>>,
    /// Instances per block in this region (1, or the AZ count for per-AZ blocks).
    counts: &'a HashMap<Address, usize>,
    /// The AZ index of the instance being read, for per-AZ blocks.
    index: Option<usize>,
}

struct PendingCidr {
    address: Address,
    field: String,
    within: Address,
    newbits: u8,
    netnum: u64,
    span: Span,
}

pub struct Reader<'i> {
    diags: Vec<Diagnostic>,
    pending: Vec<PendingCidr>,
    _src: std::marker::PhantomData<&'i ()>,
}

/// The stack as far as it could be read, and every problem found on the way.
pub fn read(
    file: &str,
    source: &str,
    stack_override: Option<&str>,
) -> (Option<Stack>, Vec<Diagnostic>) {
    let (doc, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        return (
            None,
            errors
                .iter()
                .map(|e| {
                    Diagnostic::new(
                        e.span().unwrap_or(0..0),
                        format!("TOML syntax: {}", e.message().trim()),
                    )
                })
                .collect(),
        );
    }
    let mut r = Reader {
        diags: Vec::new(),
        pending: Vec::new(),
        _src: std::marker::PhantomData,
    };
    let stack = r.read_doc(file, source, doc.get_ref(), stack_override);
    (stack, r.diags)
}

impl<'i> Reader<'i> {
    fn err(&mut self, span: Span, msg: impl Into<String>, help: impl Into<String>) {
        let help = help.into();
        let d = Diagnostic::new(span, msg);
        self.diags
            .push(if help.is_empty() { d } else { d.help(help) });
    }

    fn read_doc(
        &mut self,
        file: &str,
        source: &str,
        doc: &'i DeTable<'i>,
        stack_override: Option<&str>,
    ) -> Option<Stack> {
        let mut stack_name = None;
        let mut stack_tags = BTreeMap::new();
        let mut vars = BTreeMap::new();
        let mut regions = Vec::new();
        let mut blocks = Vec::new();
        let mut stack_seen = false;

        for (key, value) in doc.iter() {
            let k = key.get_ref().as_ref();
            match k {
                "stack" => {
                    stack_seen = true;
                    let Some(t) = self.table(value, "[stack]") else {
                        continue;
                    };
                    for (sk, sv) in t.iter() {
                        match sk.get_ref().as_ref() {
                            "name" => stack_name = self.plain_str(sv, "stack.name"),
                            "tags" => stack_tags = self.string_map(sv, "stack.tags"),
                            "description" => {
                                self.plain_str(sv, "stack.description");
                            }
                            other => self.unknown_key(
                                sk,
                                other,
                                &["name", "tags", "description"],
                                "[stack]",
                            ),
                        }
                    }
                }
                "vars" => {
                    if let Some(t) = self.table(value, "[vars]") {
                        for (vk, vv) in t.iter() {
                            vars.insert(vk.get_ref().to_string(), vv);
                        }
                    }
                }
                "regions" => {
                    if let Some(t) = self.table(value, "[regions]") {
                        for (rk, rv) in t.iter() {
                            if let Some(decl) = self.region(rk, rv) {
                                regions.push(decl);
                            }
                        }
                    }
                }
                kind_name => match kinds::by_name(kind_name).filter(|k| !k.internal()) {
                    Some(kind) => {
                        let Some(t) = self.table(value, kind_name) else {
                            continue;
                        };
                        for (bk, bv) in t.iter() {
                            let name = bk.get_ref().to_string();
                            if Address::parse(&format!("{kind_name}.{name}")).is_none() {
                                self.err(
                                    bk.span(),
                                    format!("resource name {name:?} is not a valid name"),
                                    "use letters, digits, '-' and '_'",
                                );
                                continue;
                            }
                            if let Some(table) = self.table(bv, &format!("{kind_name}.{name}")) {
                                blocks.push(Block {
                                    kind,
                                    name,
                                    span: bk.span().start..bv.span().end.min(bk.span().end + 200),
                                    table,
                                });
                            }
                        }
                    }
                    None => {
                        let mut valid: Vec<&str> = vec!["stack", "vars", "regions"];
                        valid.extend(
                            kinds::registry()
                                .iter()
                                .filter(|k| !k.internal())
                                .map(|k| k.name()),
                        );
                        self.unknown_key(key, kind_name, &valid, "the top level");
                    }
                },
            }
        }
        if blocks.len() > MAX_BLOCKS {
            self.err(
                blocks[MAX_BLOCKS].span.clone(),
                format!(
                    "{} resource blocks; a plan holds at most {MAX_BLOCKS}",
                    blocks.len()
                ),
                "split the platform into several stacks",
            );
            return None;
        }
        if !stack_seen {
            self.err(
                0..0,
                "the plan has no [stack] table",
                "add [stack] with name = \"...\"",
            );
        }
        if regions.is_empty() {
            self.err(
                0..0,
                "the plan declares no region",
                "add [regions.us-east-1] with azs = [\"us-east-1a\", ...]",
            );
        }
        let name = match stack_override {
            Some(o) => Some(o.to_string()),
            None => stack_name,
        };
        let name = name.unwrap_or_default();
        if !valid_stack_name(&name) {
            let span = doc
                .get("stack")
                .and_then(|s| s.get_ref().get("name"))
                .map(|v| v.span())
                .unwrap_or(0..0);
            self.err(
                span,
                format!("stack name {name:?} is not valid"),
                "1 to 32 characters: lowercase letters, digits and '-', starting with a letter",
            );
        }

        let mut out = BTreeMap::new();
        for region in &regions {
            let resources = self.region_resources(&name, region, &vars, &blocks, &stack_tags);
            out.insert(region.name.clone(), resources);
        }
        Some(Stack {
            name,
            file: file.to_string(),
            regions: out,
            source_hash: fnv(source.as_bytes()),
        })
    }

    fn region(
        &mut self,
        key: &Spanned<std::borrow::Cow<'i, str>>,
        value: &'i Sv<'i>,
    ) -> Option<RegionDecl<'i>> {
        let name = key.get_ref().to_string();
        if !REGIONS.contains(&name.as_str()) {
            let hint = suggest(&name, REGIONS.iter().copied())
                .map(|s| format!("did you mean {s:?}?"))
                .unwrap_or_else(|| format!("valid regions: {}", REGIONS.join(", ")));
            self.err(key.span(), format!("unknown AWS region {name:?}"), hint);
            return None;
        }
        let t = self.table(value, &format!("regions.{name}"))?;
        let mut azs = Vec::new();
        let mut vars = BTreeMap::new();
        let mut azs_seen = false;
        for (k, v) in t.iter() {
            if k.get_ref().as_ref() != "azs" {
                vars.insert(k.get_ref().to_string(), v);
                continue;
            }
            azs_seen = true;
            let DeValue::Array(items) = v.get_ref() else {
                self.err(
                    v.span(),
                    format!("regions.{name}.azs must be a list of availability zones"),
                    format!("e.g. azs = [\"{name}a\", \"{name}b\", \"{name}c\"]"),
                );
                continue;
            };
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(az) if valid_az(&name, az) => {
                        if azs.contains(&az.to_string()) {
                            self.err(
                                item.span(),
                                format!("availability zone {az:?} is listed twice"),
                                "",
                            );
                        }
                        azs.push(az.to_string());
                    }
                    DeValue::String(az) => self.err(
                        item.span(),
                        format!("availability zone {az:?} is not in region {name}"),
                        format!("AZs of {name} are named {name}a, {name}b, ..."),
                    ),
                    _ => self.err(
                        item.span(),
                        "an availability zone must be a string",
                        format!("e.g. \"{name}a\""),
                    ),
                }
            }
            if items.is_empty() {
                self.err(
                    v.span(),
                    format!("regions.{name}.azs is empty"),
                    "list at least one availability zone",
                );
            }
        }
        if !azs_seen {
            self.err(
                key.span(),
                format!("regions.{name} has no azs"),
                format!("add azs = [\"{name}a\", \"{name}b\", \"{name}c\"]"),
            );
        }
        Some(RegionDecl { name, azs, vars })
    }

    fn region_resources(
        &mut self,
        stack: &str,
        region: &RegionDecl<'i>,
        global_vars: &BTreeMap<String, &'i Sv<'i>>,
        blocks: &[Block<'i>],
        stack_tags: &BTreeMap<String, String>,
    ) -> Vec<Resource> {
        let mut vars = global_vars.clone();
        vars.extend(region.vars.iter().map(|(k, v)| (k.clone(), *v)));
        // First pass: which blocks exist here and how many instances each has.
        let mut counts = HashMap::new();
        let mut plan = Vec::new();
        for block in blocks {
            let scope = Scope {
                stack,
                region,
                vars: &vars,
                counts: &counts,
                index: None,
            };
            let in_region = match block.table.get("regions") {
                None => true,
                Some(v) => match self.convert(v, &Ty::List(&Ty::Str), &scope, 0) {
                    Some(Value::List(l)) => {
                        for r in &l {
                            let r = r.as_str().unwrap_or_default();
                            if !REGIONS.contains(&r) {
                                self.err(
                                    v.span(),
                                    format!("unknown AWS region {r:?} in regions"),
                                    "list regions declared under [regions]",
                                );
                            }
                        }
                        l.iter().any(|r| r.as_str() == Some(&region.name))
                    }
                    _ => false,
                },
            };
            if !in_region {
                continue;
            }
            let per_az = match block.table.get("per_az") {
                None => false,
                Some(v) => self
                    .convert(v, &Ty::Bool, &scope, 0)
                    .and_then(|b| b.as_bool())
                    .unwrap_or(false),
            };
            let count = if per_az { region.azs.len() } else { 1 };
            counts.insert(
                Address::new(block.kind.name(), &block.name, None),
                if per_az { count } else { 0 },
            );
            plan.push((block, per_az, count));
        }
        // Second pass: every instance's attributes.
        let mut resources = Vec::new();
        for (block, per_az, count) in plan {
            for i in 0..count {
                let index = per_az.then_some(i);
                let address = Address::new(block.kind.name(), &block.name, index);
                let scope = Scope {
                    stack,
                    region,
                    vars: &vars,
                    counts: &counts,
                    index,
                };
                let (attrs, field_spans) = self.fields(
                    &address,
                    block.kind.fields(),
                    block.table,
                    BLOCK_META,
                    &scope,
                    &block.name,
                );
                let mut tags = BTreeMap::new();
                if block.kind.taggable() {
                    tags.extend(stack_tags.clone());
                    if let Some(v) = block.table.get("tags") {
                        if let Some(Value::Map(m)) = self.convert_map_of_str(v, &scope) {
                            tags.extend(
                                m.into_iter()
                                    .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())),
                            );
                        }
                    }
                    tags.entry("Name".to_string())
                        .or_insert_with(|| match index {
                            Some(i) => {
                                format!("{stack}-{}-{}", block.name, az_suffix(&region.azs[i]))
                            }
                            None => format!("{stack}-{}", block.name),
                        });
                    tags.insert(TAG_STACK.to_string(), stack.to_string());
                    tags.insert(TAG_ADDRESS.to_string(), address.to_string());
                } else if block.table.get("tags").is_some() {
                    self.err(
                        block.table.get("tags").unwrap().span(),
                        format!("{} resources cannot carry tags", block.kind.name()),
                        "remove tags",
                    );
                }
                let depends_on = match block.table.get("depends_on") {
                    Some(v) => match self.convert(v, &Ty::List(&Ty::Ref(&[])), &scope, 0) {
                        Some(Value::List(l)) => l
                            .into_iter()
                            .filter_map(|v| if let Value::Ref(a) = v { Some(a) } else { None })
                            .collect(),
                        _ => vec![],
                    },
                    None => vec![],
                };
                let mut field_spans = field_spans;
                let exceptions = match block.table.get("soc2_exceptions") {
                    Some(v) => {
                        field_spans.insert("soc2_exceptions".into(), v.span());
                        match self.convert(v, &Ty::StrMap, &scope, 0) {
                            Some(Value::Map(m)) => m
                                .into_iter()
                                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                                .collect(),
                            _ => BTreeMap::new(),
                        }
                    }
                    None => BTreeMap::new(),
                };
                let res = Resource {
                    exceptions,
                    depends_on,
                    address,
                    region: region.name.clone(),
                    attrs,
                    tags,
                    span: block.span.clone(),
                    field_spans,
                };
                resources.extend(block.kind.expand(res));
            }
        }
        self.resolve_pending_cidrs(&mut resources);
        resources
    }

    /// Reads the fields of a block (or of a nested table) against a schema.
    fn fields(
        &mut self,
        address: &Address,
        fields: &'static [Field],
        table: &'i DeTable<'i>,
        meta: &[&str],
        scope: &Scope<'_, 'i>,
        what: &str,
    ) -> (Attrs, BTreeMap<String, Span>) {
        let mut attrs = Attrs::new();
        let mut spans = BTreeMap::new();
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            if meta.contains(&key) {
                continue;
            }
            let Some(field) = fields.iter().find(|f| f.name == key) else {
                let mut valid: Vec<&str> = fields.iter().map(|f| f.name).collect();
                valid.extend(meta);
                self.unknown_key(k, key, &valid, &format!("{}.{what}", address.kind));
                continue;
            };
            spans.insert(key.to_string(), v.span());
            if let (Ty::Cidr, DeValue::Table(t)) = (&field.ty, v.get_ref()) {
                self.computed_cidr(address, field.name, t, v.span(), scope);
                attrs.insert(key.to_string(), Value::Unknown);
                continue;
            }
            if let Some(val) = self.convert(v, &field.ty, scope, 0) {
                attrs.insert(key.to_string(), val);
            }
        }
        for field in fields {
            if table.get(field.name).is_some() {
                continue;
            }
            let val = match field.default {
                schema::Default::Required => {
                    let span = table_span(table);
                    self.err(
                        span,
                        format!(
                            "{}.{what}: missing required field `{}`",
                            address.kind, field.name
                        ),
                        format!("{} = {}  # {}", field.name, field.ty.describe(), field.doc),
                    );
                    continue;
                }
                schema::Default::None => continue,
                schema::Default::Bool(b) => Value::Bool(b),
                schema::Default::Int(i) => Value::Int(i),
                schema::Default::EmptyList => Value::List(vec![]),
                schema::Default::Str(s) => {
                    match self.interpolate(s, &table_span(table), scope, 0) {
                        Some(Interp::Text(t)) => Value::Str(t),
                        _ => continue,
                    }
                }
            };
            attrs.insert(field.name.to_string(), val);
        }
        (attrs, spans)
    }

    fn convert(
        &mut self,
        v: &'i Sv<'i>,
        ty: &Ty,
        scope: &Scope<'_, 'i>,
        depth: usize,
    ) -> Option<Value> {
        let span = v.span();
        // A string that is exactly one `${var}` takes the var's own value and type.
        if let DeValue::String(s) = v.get_ref() {
            if !matches!(ty, Ty::Str) || s.starts_with("${") {
                match self.interpolate(s, &span, scope, depth)? {
                    Interp::Whole(var) => return self.convert(var, ty, scope, depth + 1),
                    Interp::Text(t) => return self.convert_text(t, span, ty, scope),
                }
            }
        }
        let found = describe_de(v.get_ref());
        match (ty, v.get_ref()) {
            (Ty::Json, DeValue::Table(_) | DeValue::Array(_)) => {
                let doc = self.json_of(v, scope, depth)?;
                Some(Value::Str(crate::policy::canonical(&doc)))
            }
            (Ty::StrMap, DeValue::Table(t)) => {
                let mut out = BTreeMap::new();
                for (k, val) in t.iter() {
                    if let Some(Value::Str(s)) = self.convert(val, &Ty::Str, scope, depth) {
                        out.insert(k.get_ref().to_string(), Value::Str(s));
                    }
                }
                Some(Value::Map(out))
            }
            (Ty::Str, DeValue::String(s)) => match self.interpolate(s, &span, scope, depth)? {
                Interp::Text(t) => Some(Value::Str(t)),
                Interp::Whole(var) => self.convert(var, ty, scope, depth + 1),
            },
            (Ty::Int { min, max }, DeValue::Integer(i)) => {
                let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
                match n {
                    Some(n) if n >= *min && n <= *max => Some(Value::Int(n)),
                    _ => {
                        self.err(
                            span,
                            format!("{} is out of range", i.as_str()),
                            format!("expected {}", ty.describe()),
                        );
                        None
                    }
                }
            }
            (Ty::Bool, DeValue::Boolean(b)) => Some(Value::Bool(*b)),
            (Ty::List(inner), DeValue::Array(items)) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    // A per-AZ block named without index in a list means all its instances.
                    if let (Ty::Ref(_), DeValue::String(s)) = (inner, item.get_ref()) {
                        if let Some(addr) = Address::parse(s).filter(|a| a.index.is_none()) {
                            if scope.index.is_none()
                                && scope.counts.get(&addr).copied().unwrap_or(0) > 0
                            {
                                if self.check_ref(&addr, item.span(), inner, scope) {
                                    let n = scope.counts[&addr];
                                    out.extend((0..n).map(|i| {
                                        Value::Ref(Address::new(&addr.kind, &addr.name, Some(i)))
                                    }));
                                }
                                continue;
                            }
                        }
                    }
                    if let Some(val) = self.convert(item, inner, scope, depth) {
                        out.push(val);
                    }
                }
                Some(Value::List(out))
            }
            (Ty::Object(fields), DeValue::Table(t)) => {
                let address = Address::new("", "", None);
                let (attrs, _) = self.fields(&address, fields, t, &[], scope, "entry");
                Some(Value::Map(attrs))
            }
            _ => {
                self.err(
                    span,
                    format!("expected {}, found {found}", ty.describe()),
                    "",
                );
                None
            }
        }
    }

    /// Typed reading of a string (after `${}` expansion) for non-string types.
    fn convert_text(
        &mut self,
        t: String,
        span: Span,
        ty: &Ty,
        scope: &Scope<'_, 'i>,
    ) -> Option<Value> {
        match ty {
            Ty::Str => Some(Value::Str(t)),
            Ty::Cidr => match t.parse::<IpNet>() {
                Ok(net) if net.trunc() == net => Some(Value::Str(net.to_string())),
                Ok(net) => {
                    self.err(
                        span,
                        format!("CIDR {t:?} has host bits set"),
                        format!("did you mean \"{}\"?", net.trunc()),
                    );
                    None
                }
                Err(_) => {
                    self.err(
                        span,
                        format!("{t:?} is not a valid CIDR block"),
                        "expected e.g. \"10.0.0.0/16\" or \"2001:db8::/56\"",
                    );
                    None
                }
            },
            Ty::Json => match serde_json::from_str::<serde_json::Value>(&t) {
                Ok(doc) => Some(Value::Str(crate::policy::canonical(&doc))),
                Err(e) => {
                    self.err(
                        span,
                        format!("not a JSON document: {e}"),
                        "write the policy as a TOML table, or as a JSON string",
                    );
                    None
                }
            },
            Ty::Enum(vals) => {
                if vals.contains(&t.as_str()) {
                    Some(Value::Str(t))
                } else {
                    let hint = suggest(&t, vals.iter().copied())
                        .map(|s| format!("did you mean {s:?}? "))
                        .unwrap_or_default();
                    self.err(
                        span,
                        format!("{t:?} is not allowed here"),
                        format!("{hint}expected {}", ty.describe()),
                    );
                    None
                }
            }
            Ty::Ref(_) => {
                let Some(addr) = Address::parse(&t) else {
                    self.err(
                        span,
                        format!("{t:?} is not a resource reference"),
                        format!("expected {}", ty.describe()),
                    );
                    return None;
                };
                // A per-AZ target named without index: the instance in the same AZ; from a
                // block with one instance, the first AZ's (so that switching a block between
                // per-AZ and single, like the NAT gateways, is one line).
                let count = scope.counts.get(&addr.block()).copied();
                let addr = match (addr.index, count) {
                    (None, Some(n)) if n > 0 => {
                        Address::new(&addr.kind, &addr.name, Some(scope.index.unwrap_or(0)))
                    }
                    _ => addr,
                };
                self.check_ref(&addr, span, ty, scope)
                    .then_some(Value::Ref(addr))
            }
            _ => {
                self.err(
                    span,
                    format!("expected {}, found the string {t:?}", ty.describe()),
                    "",
                );
                None
            }
        }
    }

    fn check_ref(&mut self, addr: &Address, span: Span, ty: &Ty, scope: &Scope<'_, 'i>) -> bool {
        let Ty::Ref(kinds) = ty else { return false };
        if !kinds.is_empty() && !kinds.contains(&addr.kind.as_str()) {
            self.err(
                span,
                format!(
                    "{addr} is a {} but a reference to {} is expected here",
                    addr.kind,
                    kinds.join(" or ")
                ),
                format!("expected {}", ty.describe()),
            );
            return false;
        }
        match (scope.counts.get(&addr.block()), addr.index) {
            (None, _) => {
                let known: Vec<String> = scope
                    .counts
                    .keys()
                    .filter(|a| a.kind == addr.kind)
                    .map(|a| a.to_string())
                    .collect();
                let hint = suggest(&addr.block().to_string(), known.iter().map(|s| s.as_str()))
                    .map(|s| format!("did you mean \"{s}\"?"))
                    .unwrap_or_else(|| {
                        if known.is_empty() {
                            format!("no {} is declared in {}", addr.kind, scope.region.name)
                        } else {
                            format!("declared: {}", known.join(", "))
                        }
                    });
                self.err(
                    span,
                    format!("reference to undeclared resource {addr}"),
                    hint,
                );
                false
            }
            (Some(0), Some(_)) => {
                self.err(
                    span,
                    format!("{} is not per_az; it has no [index]", addr.block()),
                    format!("write \"{}\"", addr.block()),
                );
                false
            }
            (Some(&n), Some(i)) if i >= n => {
                self.err(
                    span,
                    format!(
                        "{addr}: index out of range in {} ({n} AZs)",
                        scope.region.name
                    ),
                    format!("use an index from 0 to {}", n - 1),
                );
                false
            }
            _ => true,
        }
    }

    fn interpolate(
        &mut self,
        s: &str,
        span: &Span,
        scope: &Scope<'_, 'i>,
        depth: usize,
    ) -> Option<Interp<'i>> {
        if depth > MAX_VAR_DEPTH {
            self.err(
                span.clone(),
                format!("variables nest deeper than {MAX_VAR_DEPTH} levels at {s:?}"),
                "a variable probably refers to itself",
            );
            return None;
        }
        if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            if !name.contains("${") && !name.contains('}') {
                if let Some(var) = scope.vars.get(name) {
                    return Some(Interp::Whole(var));
                }
            }
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.err(
                    span.clone(),
                    format!("unclosed \"${{\" in {s:?}"),
                    "write ${name}",
                );
                return None;
            };
            let name = &after[..end];
            let value = match name {
                "region" => Some(scope.region.name.clone()),
                "stack" => Some(scope.stack.to_string()),
                "az" | "index" if scope.index.is_none() => {
                    self.err(
                        span.clone(),
                        format!("${{{name}}} is only defined in per_az blocks"),
                        "add per_az = true, or name the AZ",
                    );
                    return None;
                }
                "az" => Some(scope.region.azs[scope.index.unwrap()].clone()),
                "index" => Some(scope.index.unwrap().to_string()),
                _ => match scope.vars.get(name).map(|v| v.get_ref()) {
                    Some(DeValue::String(v)) => {
                        match self.interpolate(v, span, scope, depth + 1)? {
                            Interp::Text(t) => Some(t),
                            Interp::Whole(_) => None,
                        }
                    }
                    Some(DeValue::Integer(i)) => Some(i.as_str().to_string()),
                    Some(DeValue::Boolean(b)) => Some(b.to_string()),
                    _ => None,
                },
            };
            match value {
                Some(v) => out.push_str(&v),
                None => {
                    let mut known: Vec<&str> = scope.vars.keys().map(|k| k.as_str()).collect();
                    known.extend(["region", "stack", "az", "index"]);
                    let hint = suggest(name, known.iter().copied())
                        .map(|k| format!("did you mean ${{{k}}}? "))
                        .unwrap_or_default();
                    self.err(
                        span.clone(),
                        format!(
                            "undefined variable ${{{name}}} in {} (in {s:?})",
                            scope.region.name
                        ),
                        format!(
                            "{hint}define it under [vars] or [regions.{}]",
                            scope.region.name
                        ),
                    );
                    return None;
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Some(Interp::Text(out))
    }

    /// `{ within = "vpc.main", newbits = 8, netnum = 0 }`; per-AZ instances add their index to netnum.
    fn computed_cidr(
        &mut self,
        address: &Address,
        field: &str,
        t: &'i DeTable<'i>,
        span: Span,
        scope: &Scope<'_, 'i>,
    ) {
        const FIELDS: &[Field] = &[
            Field::new(
                "within",
                Ty::Ref(&["vpc", "subnet"]),
                "the resource whose cidr_block is divided",
            ),
            Field::new(
                "newbits",
                Ty::Int { min: 1, max: 32 },
                "bits added to its prefix length",
            ),
            Field::new(
                "netnum",
                Ty::Int {
                    min: 0,
                    max: 1 << 24,
                },
                "which of the smaller blocks (plus the AZ index in per_az blocks)",
            ),
        ];
        let (attrs, _) = self.fields(
            address,
            FIELDS,
            t,
            &[],
            scope,
            &format!("{}.{field}", address.name),
        );
        let (Some(Value::Ref(within)), Some(newbits), Some(netnum)) = (
            attrs.get("within").cloned(),
            attrs.get("newbits").and_then(Value::as_int),
            attrs.get("netnum").and_then(Value::as_int),
        ) else {
            return;
        };
        self.pending.push(PendingCidr {
            address: address.clone(),
            field: field.to_string(),
            within,
            newbits: newbits as u8,
            netnum: netnum as u64 + scope.index.unwrap_or(0) as u64,
            span,
        });
    }

    fn resolve_pending_cidrs(&mut self, resources: &mut [Resource]) {
        let mut pending = std::mem::take(&mut self.pending);
        // A computed block may sit inside another computed one: repeat until nothing moves.
        loop {
            let before = pending.len();
            pending.retain(|p| {
                let parent = resources.iter().find(|r| r.address == p.within).and_then(|r| r.attrs.get("cidr_block")).and_then(|v| v.as_str().map(str::to_string));
                let Some(parent) = parent else { return true };
                let net: IpNet = parent.parse().expect("cidr_block values are checked");
                let result = net.prefix_len().checked_add(p.newbits).and_then(|len| net.subnets(len).ok()).and_then(|mut s| s.nth(p.netnum as usize));
                match result {
                    Some(sub) => {
                        if let Some(r) = resources.iter_mut().find(|r| r.address == p.address) {
                            r.attrs.insert(p.field.clone(), Value::Str(sub.to_string()));
                        }
                    }
                    None => self.diags.push(
                        Diagnostic::new(p.span.clone(), format!("{}: {parent} has no subnet number {} of {} extra bits", p.address, p.netnum, p.newbits))
                            .help(format!("netnum must be below {} (2^newbits), counting the AZ index for per_az blocks", 1u64 << p.newbits.min(63))),
                    ),
                }
                false
            });
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        for p in pending {
            self.err(
                p.span,
                format!(
                    "{}: cannot compute a CIDR within {}: it has no literal cidr_block",
                    p.address, p.within
                ),
                "",
            );
        }
    }

    /// A TOML value as JSON (policy documents), `${...}` expanded in strings.
    fn json_of(
        &mut self,
        v: &'i Sv<'i>,
        scope: &Scope<'_, 'i>,
        depth: usize,
    ) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        Some(match v.get_ref() {
            DeValue::String(s) => match self.interpolate(s, &v.span(), scope, depth)? {
                Interp::Text(t) => J::String(t),
                Interp::Whole(var) => return self.json_of(var, scope, depth + 1),
            },
            DeValue::Integer(i) => J::from(i64::from_str_radix(i.as_str(), i.radix()).ok()?),
            DeValue::Float(f) => J::from(f.as_str().parse::<f64>().ok()?),
            DeValue::Boolean(b) => J::Bool(*b),
            DeValue::Datetime(d) => J::String(d.to_string()),
            DeValue::Array(items) => J::Array(
                items
                    .iter()
                    .map(|i| self.json_of(i, scope, depth))
                    .collect::<Option<_>>()?,
            ),
            DeValue::Table(t) => J::Object(
                t.iter()
                    .map(|(k, v)| Some((k.get_ref().to_string(), self.json_of(v, scope, depth)?)))
                    .collect::<Option<_>>()?,
            ),
        })
    }

    fn table(&mut self, v: &'i Sv<'i>, what: &str) -> Option<&'i DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a table, found {}", describe_de(other)),
                    "",
                );
                None
            }
        }
    }

    fn plain_str(&mut self, v: &'i Sv<'i>, what: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.err(
                    v.span(),
                    format!("{what} must be a string, found {}", describe_de(other)),
                    "",
                );
                None
            }
        }
    }

    fn string_map(&mut self, v: &'i Sv<'i>, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(t) = self.table(v, what) {
            for (k, val) in t.iter() {
                if let Some(s) = self.plain_str(val, &format!("{what}.{}", k.get_ref())) {
                    self.check_tag(k, &s, val.span());
                    out.insert(k.get_ref().to_string(), s);
                }
            }
        }
        out
    }

    fn convert_map_of_str(&mut self, v: &'i Sv<'i>, scope: &Scope<'_, 'i>) -> Option<Value> {
        let t = self.table(v, "tags")?;
        let mut out = BTreeMap::new();
        for (k, val) in t.iter() {
            if let Some(Value::Str(s)) = self.convert(val, &Ty::Str, scope, 0) {
                self.check_tag(k, &s, val.span());
                out.insert(k.get_ref().to_string(), Value::Str(s));
            }
        }
        Some(Value::Map(out))
    }

    fn check_tag(&mut self, key: &Spanned<std::borrow::Cow<'i, str>>, value: &str, vspan: Span) {
        let k = key.get_ref();
        if k.starts_with("tsprov:") || k.starts_with("aws:") {
            self.err(
                key.span(),
                format!("tag key {k:?} is reserved"),
                "tsprov:* tags are set by tsprov, aws:* by AWS",
            );
        } else if k.is_empty() || k.chars().count() > 128 {
            self.err(
                key.span(),
                format!("tag key {k:?} must have 1 to 128 characters"),
                "",
            );
        }
        if value.chars().count() > 256 {
            self.err(
                vspan,
                format!("tag {k:?}: value longer than 256 characters"),
                "",
            );
        }
    }

    fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'i, str>>,
        name: &str,
        valid: &[&str],
        place: &str,
    ) {
        let hint = match suggest(name, valid.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? valid here: {}", valid.join(", ")),
            None => format!("valid here: {}", valid.join(", ")),
        };
        self.err(
            key.span(),
            format!("unknown field `{name}` in {place}"),
            hint,
        );
    }
}

enum Interp<'i> {
    Text(String),
    Whole(&'i Sv<'i>),
}

fn table_span(t: &DeTable<'_>) -> Span {
    t.iter().next().map(|(k, _)| k.span()).unwrap_or(0..0)
}

fn describe_de(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {}", i.as_str()),
        DeValue::Float(f) => format!("the float {}", f.as_str()),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the datetime {d}"),
        DeValue::Array(_) => "a list".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

fn valid_stack_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_az(region: &str, az: &str) -> bool {
    az.strip_prefix(region)
        .is_some_and(|s| s.len() == 1 && s.chars().all(|c| c.is_ascii_lowercase()))
}

fn az_suffix(az: &str) -> &str {
    &az[az.len() - 1..]
}

/// FNV-1a: a stable fingerprint of the plan file for saved plans.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[stack]
name = "t"
tags = { Project = "P" }

[vars]
nat_per_az = true

[regions.eu-west-1]
azs = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
cidr = "10.20.0.0/16"

[regions.us-east-1]
azs = ["us-east-1a", "us-east-1b"]
cidr = "10.10.0.0/16"

[vpc.main]
cidr_block = "${cidr}"

[subnet.public]
per_az = true
vpc = "vpc.main"
cidr_block = { within = "vpc.main", newbits = 8, netnum = 4 }

[eip.nat]
per_az = "${nat_per_az}"

[nat_gateway.main]
per_az = "${nat_per_az}"
subnet = "subnet.public"
eip = "eip.nat"

[route_table.public]
vpc = "vpc.main"
subnets = ["subnet.public"]
"#;

    fn stack(text: &str) -> Stack {
        let (stack, diags) = read("t.toml", text, None);
        assert!(diags.is_empty(), "{diags:?}");
        stack.unwrap()
    }

    fn get<'a>(s: &'a Stack, region: &str, address: &str) -> &'a Resource {
        s.regions[region]
            .iter()
            .find(|r| r.address.to_string() == address)
            .unwrap_or_else(|| panic!("no {address} in {region}"))
    }

    #[test]
    fn per_region_values_and_per_az_expansion() {
        let s = stack(BASE);
        assert_eq!(
            get(&s, "eu-west-1", "vpc.main").attrs["cidr_block"],
            Value::str("10.20.0.0/16")
        );
        assert_eq!(
            get(&s, "us-east-1", "vpc.main").attrs["cidr_block"],
            Value::str("10.10.0.0/16")
        );
        // netnum counts up per AZ; AZ defaults to the instance's.
        let sub = get(&s, "eu-west-1", "subnet.public[2]");
        assert_eq!(sub.attrs["cidr_block"], Value::str("10.20.6.0/24"));
        assert_eq!(sub.attrs["availability_zone"], Value::str("eu-west-1c"));
        assert_eq!(
            s.regions["us-east-1"]
                .iter()
                .filter(|r| r.address.kind == "subnet")
                .count(),
            2
        );
        // Per-AZ to per-AZ references match by index; a list takes every instance.
        let nat = get(&s, "eu-west-1", "nat_gateway.main[1]");
        assert_eq!(
            nat.attrs["subnet"],
            Value::Ref(Address::new("subnet", "public", Some(1)))
        );
        assert_eq!(
            nat.attrs["eip"],
            Value::Ref(Address::new("eip", "nat", Some(1)))
        );
        let rt = get(&s, "eu-west-1", "route_table.public");
        assert_eq!(rt.attrs["subnets"].as_list().len(), 3);
    }

    #[test]
    fn tags_carry_stack_address_and_name() {
        let s = stack(BASE);
        let tags = &get(&s, "eu-west-1", "subnet.public[0]").tags;
        assert_eq!(tags["tsprov:stack"], "t");
        assert_eq!(tags["tsprov:address"], "subnet.public[0]");
        assert_eq!(tags["Project"], "P");
        assert_eq!(tags["Name"], "t-public-a");
    }

    #[test]
    fn single_nat_switch_is_one_line() {
        let s = stack(&BASE.replace("nat_per_az = true", "nat_per_az = false"));
        let nats: Vec<_> = s.regions["eu-west-1"]
            .iter()
            .filter(|r| r.address.kind == "nat_gateway")
            .collect();
        assert_eq!(nats.len(), 1);
        assert_eq!(nats[0].address.to_string(), "nat_gateway.main");
        assert_eq!(
            nats[0].attrs["subnet"],
            Value::Ref(Address::new("subnet", "public", Some(0)))
        );
        assert_eq!(
            nats[0].attrs["eip"],
            Value::Ref(Address::new("eip", "nat", None))
        );
    }

    #[test]
    fn stack_override_renames_and_retags() {
        let (s, _) = read("t.toml", BASE, Some("other"));
        let s = s.unwrap();
        assert_eq!(s.name, "other");
        assert_eq!(
            get(&s, "eu-west-1", "vpc.main").tags["tsprov:stack"],
            "other"
        );
    }

    #[test]
    fn security_group_splits_into_group_and_rules() {
        let text = format!("{BASE}\n[security_group.db]\nvpc = \"vpc.main\"\ningress = [{{ port = 5432, security_group = \"security_group.db\" }}]\n");
        let s = stack(&text);
        let rules = get(&s, "eu-west-1", "security_group_rules.db");
        assert_eq!(
            rules.attrs["group"],
            Value::Ref(Address::new("security_group", "db", None))
        );
        let rule = rules.attrs["ingress"].as_list()[0]
            .as_map()
            .unwrap()
            .clone();
        assert_eq!(rule["from_port"], Value::Int(5432));
        assert_eq!(rule["to_port"], Value::Int(5432));
        assert_eq!(rule["protocol"], Value::str("tcp"));
        // Left out, egress is what AWS gives a new group: all traffic out.
        assert_eq!(rules.attrs["egress"].as_list().len(), 1);
        assert!(!get(&s, "eu-west-1", "security_group.db")
            .attrs
            .contains_key("ingress"));
    }

    #[test]
    fn invalid_utf8_and_deep_nesting_give_errors_not_panics() {
        let nested = format!(
            "[stack]\nname = \"t\"\nx = {}1{}\n",
            "[".repeat(200),
            "]".repeat(200)
        );
        let (_, diags) = read("t.toml", &nested, None);
        assert!(!diags.is_empty());
    }

    #[test]
    fn self_referencing_variable_is_an_error() {
        let (_, diags) = read(
            "t.toml",
            &BASE.replace("nat_per_az = true", "nat_per_az = \"${nat_per_az}\""),
            None,
        );
        assert!(
            diags.iter().any(|d| d.message.contains("nest deeper")),
            "{diags:?}"
        );
    }
}
