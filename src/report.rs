//! Human and JSON rendering: the plan, progress lines during apply, the summary.

use std::fmt::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::apply::Outcome;
use crate::diff::{Action, AttrChange, Change, Summary};
use crate::model::Value;

/// Progress lines on stderr, prefixed with the region and the time since start.
#[derive(Clone, Debug)]
pub struct Progress {
    region: String,
    start: Instant,
    interval: Duration,
    /// Set on Ctrl-C: no new step starts, waiters give up.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    pub fn new(region: &str, start: Instant) -> Progress {
        // Waiters report every 15 s unless TSPROV_PROGRESS_SECONDS says otherwise.
        let secs = std::env::var("TSPROV_PROGRESS_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15.0);
        Progress {
            region: region.to_string(),
            start,
            interval: Duration::from_secs_f64(secs),
            stop: Default::default(),
        }
    }
    /// Shares one stop flag between the regions of a run.
    pub fn with_stop(mut self, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Progress {
        self.stop = stop;
        self
    }
    pub fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub fn interval(&self) -> Duration {
        self.interval
    }
    pub fn line(&self, msg: &str) {
        eprintln!(
            "[{:>6.1}s {}] {msg}",
            self.start.elapsed().as_secs_f64(),
            self.region
        );
    }
}

#[derive(Serialize)]
pub struct RegionPlan {
    pub region: String,
    pub changes: Vec<Change>,
    pub summary: Summary,
}

/// The readable plan of all regions.
pub fn plan_text(regions: &[RegionPlan]) -> String {
    let mut out = String::new();
    for r in regions {
        let _ = writeln!(out, "Region {}:", r.region);
        if r.changes.is_empty() {
            out.push_str("  no changes\n");
        }
        // Execution follows dependencies; people read by address.
        let mut sorted: Vec<&Change> = r.changes.iter().collect();
        sorted.sort_by(|a, b| a.address.cmp(&b.address));
        for c in sorted {
            let id =
                c.id.as_deref()
                    .map(|i| format!(" ({i})"))
                    .unwrap_or_default();
            let forced: Vec<&str> = c
                .attributes
                .iter()
                .filter(|a| a.forces_replacement)
                .map(|a| a.name.as_str())
                .collect();
            let why = if c.action == Action::Replace {
                format!("  # {} forces replacement", forced.join(", "))
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {:>3} {}{id}{why}", c.action.symbol(), c.address);
            if let Some(why) = &c.blocked {
                let _ = writeln!(out, "      ! blocked: {why}");
            }
            for a in &c.attributes {
                render_attr(&mut out, c.action, a);
            }
        }
        let _ = writeln!(out, "  {}: {}\n", r.region, summary_line(&r.summary));
    }
    let total = regions.iter().fold(Summary::default(), |mut t, r| {
        t.add += r.summary.add;
        t.change += r.summary.change;
        t.replace += r.summary.replace;
        t.destroy += r.summary.destroy;
        t.blocked += r.summary.blocked;
        t
    });
    let _ = writeln!(out, "Plan: {}", summary_line(&total));
    out
}

fn render_attr(out: &mut String, action: Action, a: &AttrChange) {
    let mark = if a.forces_replacement && action == Action::Replace {
        "  # forces replacement"
    } else {
        ""
    };
    match (action, &a.old, &a.new) {
        (Action::Create, _, Some(new)) => {
            let _ = writeln!(out, "        {:<24} = {}", a.name, new.render());
        }
        _ if !a.added.is_empty() || !a.removed.is_empty() => {
            let _ = writeln!(out, "        {}:{mark}", a.name);
            for v in &a.removed {
                let _ = writeln!(out, "          - {}", v.render());
            }
            for v in &a.added {
                let _ = writeln!(out, "          + {}", v.render());
            }
        }
        (_, Some(Value::Map(old)), Some(Value::Map(new))) => {
            // Maps (tags): only the keys that change.
            let _ = writeln!(out, "        {}:{mark}", a.name);
            for (k, v) in old.iter().filter(|(k, _)| !new.contains_key(*k)) {
                let _ = writeln!(out, "          - {k} = {}", v.render());
            }
            for (k, v) in new {
                match old.get(k) {
                    None => {
                        let _ = writeln!(out, "          + {k} = {}", v.render());
                    }
                    Some(o) if o != v => {
                        let _ = writeln!(out, "          ~ {k}: {} -> {}", o.render(), v.render());
                    }
                    _ => {}
                }
            }
        }
        (_, old, new) => {
            let show = |v: &Option<Value>| {
                v.as_ref()
                    .map(|v| v.render())
                    .unwrap_or_else(|| "(none)".into())
            };
            let _ = writeln!(
                out,
                "        {}: {} -> {}{mark}",
                a.name,
                show(old),
                show(new)
            );
        }
    }
}

pub fn summary_line(s: &Summary) -> String {
    let blocked = if s.blocked > 0 {
        format!(" {} blocked.", s.blocked)
    } else {
        String::new()
    };
    format!(
        "{} to add, {} to change, {} to replace, {} to destroy.{blocked}",
        s.add, s.change, s.replace, s.destroy
    )
}

/// What apply or destroy did, per region.
pub fn outcome_text(region: &str, outcomes: &[Outcome]) -> String {
    let count = |status: &str| outcomes.iter().filter(|o| o.status == status).count();
    let mut out = format!(
        "{region}: {} done, {} failed, {} skipped\n",
        count("ok"),
        count("failed"),
        count("skipped")
    );
    for o in outcomes.iter().filter(|o| o.status != "ok") {
        let _ = writeln!(
            out,
            "  {} {}: {}",
            o.status,
            o.address,
            o.error.as_deref().unwrap_or("")
        );
    }
    out
}
