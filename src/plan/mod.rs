//! Plan files -> the typed model: parse, expand per region, check everything
//! (types, references, CIDRs, AZs, cycles, per-kind rules) before any AWS call.

pub mod guardrails;
pub mod read;
pub mod source;

use std::path::Path;

use crate::graph::Graph;
use crate::kinds;
use crate::model::Stack;
use source::{Diagnostic, Diagnostics};

/// The largest plan file tsprov reads.
pub const MAX_PLAN_BYTES: u64 = 10 << 20;

/// Reads and validates a plan file; every problem is reported at once.
pub fn load(path: &Path, stack_override: Option<&str>) -> Result<Stack, Diagnostics> {
    let file = path.display().to_string();
    let fail = |source: String, items: Vec<Diagnostic>| Diagnostics {
        file: file.clone(),
        source,
        items,
    };
    // Hostile or mistaken input must fail fast: a size bound before reading it.
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > MAX_PLAN_BYTES {
        return Err(fail(
            String::new(),
            vec![Diagnostic::new(
                0..0,
                format!(
                    "the plan file is {:.1} MiB; plan files are limited to {} MiB",
                    size as f64 / 1048576.0,
                    MAX_PLAN_BYTES >> 20
                ),
            )
            .help("split the platform into several stacks")],
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        fail(
            String::new(),
            vec![Diagnostic::new(
                0..0,
                format!("cannot read the plan file: {e}"),
            )],
        )
    })?;
    let source = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let source = String::from_utf8_lossy(e.as_bytes()).into_owned();
            return Err(fail(
                source,
                vec![Diagnostic::new(
                    at..at + 1,
                    format!("the plan file is not valid UTF-8 (byte {at})"),
                )
                .help("save the file as UTF-8")],
            ));
        }
    };
    // Checks run on what could be read even when reading found problems: all are reported at once.
    let (stack, mut items) = read::read(&file, &source, stack_override);
    if let Some(stack) = &stack {
        items.extend(check(stack));
    }
    items.sort_by_key(|d| (d.span.start, d.message.clone()));
    items.dedup();
    match stack {
        Some(stack) if items.is_empty() => Ok(stack),
        _ => Err(fail(source, items)),
    }
}

/// Checks that need the whole region: per-kind rules and dependency cycles.
pub fn check(stack: &Stack) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for resources in stack.regions.values() {
        for r in resources {
            if let Some(kind) = kinds::by_name(&r.address.kind) {
                kind.check(r, resources, &mut diags);
            }
        }
        for kind in kinds::registry() {
            kind.check_all(resources, &mut diags);
        }
        guardrails::check(resources, &mut diags);
        for cycle in Graph::build(resources).cycles() {
            let path = cycle
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" -> ");
            for addr in &cycle[..cycle.len() - 1] {
                if let Some(r) = resources.iter().find(|r| &r.address == addr) {
                    diags.push(
                        Diagnostic::new(r.span.clone(), format!("dependency cycle: {path}"))
                            .help("break the cycle: one of these references must go"),
                    );
                }
            }
        }
    }
    diags
}
