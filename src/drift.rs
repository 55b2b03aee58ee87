//! Drift: the same diff as plan, read as findings about AWS rather than as work
//! to do. A resource declared but not found is `missing`; found but not as
//! declared, `modified` (each attribute: expected, actual); tagged with the stack
//! but not declared, `unmanaged`. JSON schema `tsprov.drift/v1`:
//!
//! ```text
//! { "schema": "tsprov.drift/v1", "stack": s, "time": RFC 3339, "in_sync": bool,
//!   "regions": [{ "region": r, "findings": [{ "address", "finding", "id"?,
//!                 "attributes": [{ "name", "expected"?, "actual"? }] }],
//!                 "summary": { "modified", "missing", "unmanaged" } }],
//!   "summary": { "modified", "missing", "unmanaged" }, "api_calls": n }
//! ```

use std::fmt::Write;

use serde::Serialize;

use crate::diff::{Action, Change};
use crate::model::{Address, Value};

pub const SCHEMA: &str = "tsprov.drift/v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finding {
    Modified,
    Missing,
    Unmanaged,
}

#[derive(Clone, Debug, Serialize)]
pub struct Drifted {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ResourceFinding {
    pub address: Address,
    pub finding: Finding,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Drifted>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub modified: usize,
    pub missing: usize,
    pub unmanaged: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.modified + self.missing + self.unmanaged
    }
    fn add(&mut self, f: Finding) {
        match f {
            Finding::Modified => self.modified += 1,
            Finding::Missing => self.missing += 1,
            Finding::Unmanaged => self.unmanaged += 1,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RegionDrift {
    pub region: String,
    pub findings: Vec<ResourceFinding>,
    pub summary: Counts,
}

/// One region's findings from its changes. A difference that only follows from
/// another finding (a reference to a missing resource, known only after apply) is
/// left out: the missing resource is the finding.
pub fn region(region: &str, changes: &[Change]) -> RegionDrift {
    let mut findings = Vec::new();
    let mut summary = Counts::default();
    for c in changes {
        // The rules of an unmanaged security group are part of that one finding.
        let parent_unmanaged = c.action == Action::Delete
            && crate::kinds::by_name(&c.address.kind).is_some_and(|k| k.internal())
            && changes.iter().any(|p| {
                p.action == Action::Delete
                    && p.address.kind != c.address.kind
                    && p.address.name == c.address.name
                    && p.address.index == c.address.index
            });
        if parent_unmanaged {
            continue;
        }
        let (finding, attributes) = match c.action {
            Action::Create => (Finding::Missing, vec![]),
            Action::Delete => (Finding::Unmanaged, vec![]),
            Action::Update | Action::Replace => {
                let attributes: Vec<Drifted> = c
                    .attributes
                    .iter()
                    .filter(|a| !a.new.as_ref().is_some_and(Value::contains_unknown))
                    .map(|a| Drifted {
                        name: a.name.clone(),
                        expected: a.new.clone(),
                        actual: a.old.clone(),
                    })
                    .collect();
                if attributes.is_empty() {
                    continue;
                }
                (Finding::Modified, attributes)
            }
        };
        summary.add(finding);
        findings.push(ResourceFinding {
            address: c.address.clone(),
            finding,
            id: c.id.clone(),
            attributes,
        });
    }
    findings.sort_by(|a, b| a.address.cmp(&b.address));
    RegionDrift {
        region: region.to_string(),
        findings,
        summary,
    }
}

pub fn total(regions: &[RegionDrift]) -> Counts {
    regions.iter().fold(Counts::default(), |mut t, r| {
        t.modified += r.summary.modified;
        t.missing += r.summary.missing;
        t.unmanaged += r.summary.unmanaged;
        t
    })
}

pub fn text(stack: &str, regions: &[RegionDrift]) -> String {
    let mut out = String::new();
    let total = total(regions);
    for r in regions {
        let _ = writeln!(
            out,
            "Region {}: {}",
            r.region,
            if r.findings.is_empty() {
                "in sync"
            } else {
                "DRIFT"
            }
        );
        for f in &r.findings {
            let id =
                f.id.as_deref()
                    .map(|i| format!(" ({i})"))
                    .unwrap_or_default();
            let what = match f.finding {
                Finding::Modified => "modified",
                Finding::Missing => "missing: declared, not found in AWS",
                Finding::Unmanaged => "unmanaged: tagged with the stack, not declared",
            };
            let _ = writeln!(out, "  {}{id}: {what}", f.address);
            for a in &f.attributes {
                let show = |v: &Option<Value>| {
                    v.as_ref()
                        .map(Value::render)
                        .unwrap_or_else(|| "(none)".into())
                };
                let _ = writeln!(
                    out,
                    "      {}: expected {}, actual {}",
                    a.name,
                    show(&a.expected),
                    show(&a.actual)
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "Drift of stack {stack}: {} modified, {} missing, {} unmanaged{}",
        total.modified,
        total.missing,
        total.unmanaged,
        if total.total() == 0 { " (in sync)" } else { "" }
    );
    out
}

/// Prometheus text format, for the platform's monitoring.
pub fn metrics(stack: &str, regions: &[RegionDrift], success: bool, unix_time: f64) -> String {
    let mut out = String::new();
    out.push_str("# HELP tsprov_drift_resources Resources found in drift by the last run, per region and finding.\n# TYPE tsprov_drift_resources gauge\n");
    for r in regions {
        for (finding, n) in [
            ("modified", r.summary.modified),
            ("missing", r.summary.missing),
            ("unmanaged", r.summary.unmanaged),
        ] {
            let _ = writeln!(out, "tsprov_drift_resources{{stack=\"{stack}\",region=\"{}\",finding=\"{finding}\"}} {n}", r.region);
        }
    }
    out.push_str("# HELP tsprov_drift_last_run_timestamp_seconds When the last drift run ended.\n# TYPE tsprov_drift_last_run_timestamp_seconds gauge\n");
    let _ = writeln!(
        out,
        "tsprov_drift_last_run_timestamp_seconds{{stack=\"{stack}\"}} {unix_time:.3}"
    );
    out.push_str("# HELP tsprov_drift_last_run_success Whether the last drift run could read every region (1) or failed (0).\n# TYPE tsprov_drift_last_run_success gauge\n");
    let _ = writeln!(
        out,
        "tsprov_drift_last_run_success{{stack=\"{stack}\"}} {}",
        success as u8
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::AttrChange;

    fn change(address: &str, action: Action, attributes: Vec<AttrChange>) -> Change {
        Change {
            address: Address::parse(address).unwrap(),
            action,
            id: Some("id-1".into()),
            attributes,
            blocked: None,
        }
    }

    fn attr(name: &str, old: Value, new: Value) -> AttrChange {
        AttrChange {
            name: name.into(),
            old: Some(old),
            new: Some(new),
            forces_replacement: false,
            added: vec![],
            removed: vec![],
        }
    }

    #[test]
    fn changes_read_as_findings() {
        let changes = vec![
            change(
                "kms_key.main",
                Action::Update,
                vec![attr(
                    "enable_key_rotation",
                    Value::Bool(false),
                    Value::Bool(true),
                )],
            ),
            change("flow_log.vpc", Action::Create, vec![]),
            change("security_group.rogue", Action::Delete, vec![]),
            // Follows from the missing flow log's dependency only: not a finding of its own.
            change(
                "route_table.a",
                Action::Replace,
                vec![attr("vpc", Value::str("vpc-1"), Value::Unknown)],
            ),
        ];
        let r = region("eu-west-1", &changes);
        assert_eq!(
            r.summary,
            Counts {
                modified: 1,
                missing: 1,
                unmanaged: 1
            }
        );
        let rotation = r
            .findings
            .iter()
            .find(|f| f.address.kind == "kms_key")
            .unwrap();
        assert_eq!(rotation.attributes[0].expected, Some(Value::Bool(true)));
        assert_eq!(rotation.attributes[0].actual, Some(Value::Bool(false)));
        let report = text("s", std::slice::from_ref(&r));
        assert!(
            report.contains("enable_key_rotation: expected true, actual false"),
            "{report}"
        );
        assert!(
            report.contains("1 modified, 1 missing, 1 unmanaged"),
            "{report}"
        );
        let prom = metrics("s", &[r], true, 1.0);
        assert!(
            prom.contains(
                "tsprov_drift_resources{stack=\"s\",region=\"eu-west-1\",finding=\"missing\"} 1"
            ),
            "{prom}"
        );
    }
}
