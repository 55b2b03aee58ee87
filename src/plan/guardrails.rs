//! SOC 2 Type II guardrails: `validate` (and so plan and apply) refuses a plan
//! that breaks the platform's controls, unless the resource names the control in
//! `soc2_exceptions = { <control> = "<why>" }` with a reason.

use std::collections::HashSet;

use crate::model::{Address, Resource, Value};
use crate::plan::source::Diagnostic;

/// Every control: its id (used in `soc2_exceptions`) and what it requires.
pub const CONTROLS: &[(&str, &str)] = &[
    (
        "encryption-at-rest",
        "data at rest is encrypted with a customer-managed KMS key",
    ),
    (
        "encryption-in-transit",
        "cache traffic is encrypted in transit",
    ),
    ("backup-retention", "databases keep 35 days of backups"),
    ("flow-logs", "every VPC logs ALL traffic with a flow log"),
    (
        "eks-control-plane-logs",
        "EKS sends all five control-plane log types",
    ),
    ("key-rotation", "KMS keys rotate yearly"),
    (
        "open-ingress",
        "nothing but 443 is open to 0.0.0.0/0 or ::/0",
    ),
    (
        "s3-public-access",
        "S3 buckets have all four public-access blocks",
    ),
    (
        "eks-public-endpoint",
        "an EKS public endpoint is limited to a CIDR allow-list",
    ),
];

const MIN_REASON: usize = 10;

fn get<'a>(r: &'a Resource, field: &str) -> Option<&'a Value> {
    r.attrs.get(field)
}

fn is_true(r: &Resource, field: &str) -> bool {
    get(r, field).and_then(Value::as_bool) == Some(true)
}

/// The controls a resource breaks: (control, field, message, fix).
fn violations(
    r: &Resource,
    logged_vpcs: &HashSet<&Address>,
) -> Vec<(&'static str, &'static str, String, String)> {
    let mut out = Vec::new();
    let mut v =
        |control, field, msg: String, fix: &str| out.push((control, field, msg, fix.to_string()));
    let no_cmk = |r: &Resource| !matches!(get(r, "kms_key"), Some(Value::Ref(_)));
    match r.address.kind.as_str() {
        "kms_key" if !is_true(r, "enable_key_rotation") => v(
            "key-rotation",
            "enable_key_rotation",
            "key rotation is off".into(),
            "enable_key_rotation = true",
        ),
        "rds_cluster" => {
            if !is_true(r, "storage_encrypted") || no_cmk(r) {
                v(
                    "encryption-at-rest",
                    "kms_key",
                    "storage is not encrypted with a customer-managed key".into(),
                    "storage_encrypted = true and kms_key = \"kms_key.<name>\"",
                );
            }
            let days = get(r, "backup_retention_days")
                .and_then(Value::as_int)
                .unwrap_or(0);
            if days < 35 {
                v(
                    "backup-retention",
                    "backup_retention_days",
                    format!("backups are kept {days} days"),
                    "backup_retention_days = 35",
                );
            }
        }
        "replication_group" => {
            if !is_true(r, "at_rest_encryption") || no_cmk(r) {
                v(
                    "encryption-at-rest",
                    "kms_key",
                    "the cache is not encrypted at rest with a customer-managed key".into(),
                    "at_rest_encryption = true and kms_key = \"kms_key.<name>\"",
                );
            }
            if !is_true(r, "transit_encryption") {
                v(
                    "encryption-in-transit",
                    "transit_encryption",
                    "in-transit encryption is off".into(),
                    "transit_encryption = true",
                );
            }
        }
        "s3_bucket" => {
            if no_cmk(r) {
                v(
                    "encryption-at-rest",
                    "kms_key",
                    "the bucket is not encrypted with a customer-managed key (SSE-KMS)".into(),
                    "kms_key = \"kms_key.<name>\"",
                );
            }
            let off: Vec<&str> = [
                "block_public_acls",
                "ignore_public_acls",
                "block_public_policy",
                "restrict_public_buckets",
            ]
            .into_iter()
            .filter(|f| !is_true(r, f))
            .collect();
            if !off.is_empty() {
                v(
                    "s3-public-access",
                    off[0],
                    format!("public-access blocks off: {}", off.join(", ")),
                    "leave all four public-access blocks true",
                );
            }
        }
        "log_group" if no_cmk(r) => v(
            "encryption-at-rest",
            "kms_key",
            "log events are not encrypted with a customer-managed key".into(),
            "kms_key = \"kms_key.<name>\"",
        ),
        "eks_cluster" => {
            if no_cmk(r) {
                v(
                    "encryption-at-rest",
                    "kms_key",
                    "Kubernetes secrets are not encrypted with a customer-managed key".into(),
                    "kms_key = \"kms_key.<name>\"",
                );
            }
            let enabled: Vec<&str> = get(r, "enabled_log_types")
                .map(Value::as_list)
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let missing: Vec<&str> = crate::kinds::eks::LOG_TYPES
                .iter()
                .copied()
                .filter(|t| !enabled.contains(t))
                .collect();
            if !missing.is_empty() {
                v("eks-control-plane-logs", "enabled_log_types", format!("control-plane logs off: {}", missing.join(", ")), "enabled_log_types = [\"api\", \"audit\", \"authenticator\", \"controllerManager\", \"scheduler\"]");
            }
            let cidrs: Vec<&str> = get(r, "public_access_cidrs")
                .map(Value::as_list)
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if is_true(r, "endpoint_public_access")
                && (cidrs.is_empty() || cidrs.iter().any(|c| *c == "0.0.0.0/0" || *c == "::/0"))
            {
                v(
                    "eks-public-endpoint",
                    "endpoint_public_access",
                    "the public API endpoint is open to the world".into(),
                    "endpoint_public_access = false, or public_access_cidrs = [\"<office range>\"]",
                );
            }
        }
        "vpc" => {
            let logged = logged_vpcs.contains(&r.address);
            if !logged {
                v(
                    "flow-logs",
                    "cidr_block",
                    format!("no flow log records ALL traffic of {}", r.address),
                    "add [flow_log.<name>] with vpc = \"<this vpc>\" and traffic_type = \"ALL\"",
                );
            }
        }
        "security_group_rules" => {
            for rule in get(r, "ingress").map(Value::as_list).unwrap_or_default() {
                let Some(m) = rule.as_map() else { continue };
                let world = matches!(
                    m.get("cidr").and_then(Value::as_str),
                    Some("0.0.0.0/0" | "::/0")
                );
                let https = m.get("protocol").and_then(Value::as_str) == Some("tcp")
                    && m.get("from_port") == Some(&Value::Int(443))
                    && m.get("to_port") == Some(&Value::Int(443));
                if world && !https {
                    v("open-ingress", "ingress", format!("ingress {} is open to the world", rule.render()), "open only port 443 to 0.0.0.0/0, or name a narrower cidr or a security group");
                }
            }
        }
        _ => {}
    }
    out
}

pub fn check(region: &[Resource], diags: &mut Vec<Diagnostic>) {
    // The VPCs an ALL-traffic flow log covers, found once for the region.
    let logged_vpcs: HashSet<&Address> = region
        .iter()
        .filter(|f| {
            f.address.kind == "flow_log"
                && get(f, "traffic_type").and_then(Value::as_str) == Some("ALL")
        })
        .filter_map(|f| match get(f, "vpc") {
            Some(Value::Ref(a)) => Some(a),
            _ => None,
        })
        .collect();
    for r in region {
        for (control, reason) in &r.exceptions {
            if !CONTROLS.iter().any(|(c, _)| c == control) {
                let ids: Vec<&str> = CONTROLS.iter().map(|(c, _)| *c).collect();
                diags.push(
                    Diagnostic::new(
                        r.span_of("soc2_exceptions"),
                        format!(
                            "{}: unknown SOC 2 control {control:?} in soc2_exceptions",
                            r.address
                        ),
                    )
                    .help(format!("controls: {}", ids.join(", "))),
                );
            } else if reason.trim().chars().count() < MIN_REASON {
                diags.push(
                    Diagnostic::new(
                        r.span_of("soc2_exceptions"),
                        format!(
                            "{}: the exception to {control} needs a reason, got {reason:?}",
                            r.address
                        ),
                    )
                    .help("say why, in a sentence an auditor can read"),
                );
            }
        }
        for (control, field, message, fix) in violations(r, &logged_vpcs) {
            if r.exceptions
                .get(control)
                .is_some_and(|why| why.trim().chars().count() >= MIN_REASON)
            {
                continue;
            }
            let rule = CONTROLS
                .iter()
                .find(|(c, _)| *c == control)
                .map(|(_, d)| *d)
                .unwrap_or_default();
            diags.push(
                Diagnostic::new(r.span_of(field), format!("SOC 2 control {control} ({rule}): {} in {}: {message}", r.address, r.region))
                    .help(format!("{fix}; or, if this is deliberate, soc2_exceptions = {{ {control} = \"<why>\" }}")),
            );
        }
    }
}
