//! The commands: load the plan, read live state, diff, show, apply. Exit codes:
//! 0 done or nothing to do, 1 error, 2 changes pending (`plan --detailed-exitcode`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::aws::{self, CallCounter};
use crate::cli::{Cli, Command, Common, GraphFormat};
use crate::diff::{self, Change, Summary};
use crate::drift;
use crate::graph::Graph;
use crate::kinds::{self, Cx, Live};
use crate::lock;
use crate::model::{Resource, Stack, TAG_STACK};
use crate::plan;
use crate::report::{self, Progress, RegionPlan};

pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            if let Some(locked) = e.downcast_ref::<lock::Locked>() {
                eprintln!("error: {locked}");
                return ExitCode::from(3);
            }
            match e.downcast_ref::<plan::source::Diagnostics>() {
                Some(d) => eprint!("{}", d.render()),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { plan, stack } => {
            let stack = plan::load(&plan, stack.as_deref())?;
            let count: usize = stack.regions.values().map(Vec::len).sum();
            println!(
                "{}: valid: stack {}, {} regions, {count} resources",
                plan.display(),
                stack.name,
                stack.regions.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph {
            plan,
            format,
            stack,
        } => {
            let stack = plan::load(&plan, stack.as_deref())?;
            let mut out = String::new();
            match format {
                GraphFormat::Dot => out.push_str(&format!(
                    "digraph \"{}\" {{\n  rankdir = LR;\n  node [shape=box];\n",
                    stack.name
                )),
                GraphFormat::Mermaid => out.push_str("flowchart LR\n"),
            }
            for (region, resources) in &stack.regions {
                let g = Graph::build(resources);
                match format {
                    GraphFormat::Dot => g.dot(region, &mut out),
                    GraphFormat::Mermaid => g.mermaid(region, &mut out),
                }
            }
            if let GraphFormat::Dot = format {
                out.push_str("}\n");
            }
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            common,
            json,
            out,
            detailed_exitcode,
        } => {
            let session = Session::open(&common, Purpose::Plan).await?;
            let plans = session.region_plans();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&session.plan_json(&plans))?
                );
            } else {
                print!("{}", report::plan_text(&plans));
                println!("AWS API calls: {}", session.calls.total());
            }
            if let Some(path) = out {
                session.save(&path, &common)?;
                eprintln!(
                    "Saved the plan to {}; apply it with: tsprov apply {}",
                    path.display(),
                    path.display()
                );
            }
            let changes = plans.iter().any(|p| !p.summary.is_empty());
            Ok(if detailed_exitcode && changes {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Apply {
            common,
            auto_approve,
        } => {
            let (common, saved) = match SavedPlan::read_if_saved(&common.plan)? {
                Some(saved) => (saved.common(&common), Some(saved)),
                None => (common, None),
            };
            let mut session = Session::open(&common, Purpose::Apply).await?;
            let result = match &saved {
                Some(saved) => saved.check_unchanged(&session),
                None => Ok(()),
            };
            let result = match result {
                Ok(()) => execute(&session, auto_approve || saved.is_some(), "apply").await,
                Err(e) => Err(e),
            };
            session.release_lock().await;
            result
        }
        Command::Drift {
            common,
            json,
            every,
            metrics_file,
        } => match every {
            None => drift_once(&common, json, metrics_file.as_deref()).await,
            Some(interval) => drift_every(&common, json, metrics_file.as_deref(), interval).await,
        },
        Command::Destroy {
            common,
            auto_approve,
        } => {
            let mut session = Session::open(&common, Purpose::Destroy).await?;
            let result = execute(&session, auto_approve, "destroy").await;
            session.release_lock().await;
            result
        }
        Command::Unlock { common } => {
            let stack = plan::load(&common.plan, common.stack.as_deref())?;
            let calls = Arc::new(CallCounter::default());
            let clients = aws::clients(lock::REGION, common.endpoint_url.as_deref(), calls).await;
            match lock::break_lock(&clients, &stack.name).await? {
                Some(r) => println!(
                    "unlocked stack {}: the lock of {} (`{}` since {}) is gone",
                    stack.name, r.holder, r.command, r.since
                ),
                None => println!("stack {} was not locked", stack.name),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn execute(session: &Session, auto_approve: bool, verb: &str) -> Result<ExitCode> {
    let plans = session.region_plans();
    print!("{}", report::plan_text(&plans));
    if plans.iter().all(|p| p.summary.is_empty()) {
        println!(
            "Nothing to {verb}: live state matches the plan ({} AWS API calls in all).",
            session.calls.total()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let blocked: usize = plans.iter().map(|p| p.summary.blocked).sum();
    if blocked > 0 {
        bail!("refusing to {verb}: {blocked} change(s) are blocked (marked ! above); nothing was changed");
    }
    if !auto_approve && !confirm(verb)? {
        eprintln!("{verb} cancelled; nothing was changed.");
        return Ok(ExitCode::from(1));
    }
    let start = Instant::now();
    let parallelism = session.parallelism;
    if let Some(lock) = &session.lock {
        lock.changes_start();
    }
    // Ctrl-C: start nothing new, let the calls in flight finish, then report what was done.
    let stop = session.stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupt: no new step starts; waiting for the calls in flight (Ctrl-C again to quit at once)");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupt: quitting now; the stack's lock stays until it expires (10 min) or `tsprov unlock`");
                std::process::exit(130);
            }
        }
    });
    let runs = session.regions.iter().map(|r| async move {
        let outcomes = crate::apply::run(
            &r.cx,
            &r.desired,
            &r.planned,
            &r.live,
            &r.changes,
            parallelism,
        )
        .await;
        (r.cx.region.clone(), outcomes)
    });
    let results = futures::future::join_all(runs).await;
    let mut failed = false;
    println!();
    for (region, outcomes) in &results {
        failed |= outcomes.iter().any(|o| o.status != "ok");
        print!("{}", report::outcome_text(region, outcomes));
    }
    let interrupted = session.stop.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{verb} {} in {:.1}s ({} AWS API calls in all)",
        if interrupted {
            "INTERRUPTED"
        } else if failed {
            "FAILED"
        } else {
            "complete"
        },
        start.elapsed().as_secs_f64(),
        session.calls.total()
    );
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One drift check: 0 in sync, 2 drift found (errors go up as Err).
async fn drift_once(common: &Common, json: bool, metrics: Option<&Path>) -> Result<ExitCode> {
    let result = Session::open(common, Purpose::Drift).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let session = match result {
        Ok(s) => s,
        Err(e) => {
            if let Some(path) = metrics {
                let stack = common.stack.clone().unwrap_or_default();
                write_atomically(path, &drift::metrics(&stack, &[], false, now))?;
            }
            return Err(e);
        }
    };
    let regions: Vec<drift::RegionDrift> = session
        .regions
        .iter()
        .map(|r| drift::region(&r.cx.region, &r.changes))
        .collect();
    let total = drift::total(&regions);
    if json {
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let doc = serde_json::json!({
            "schema": drift::SCHEMA,
            "stack": session.stack.name,
            "time": time,
            "in_sync": total.total() == 0,
            "regions": regions,
            "summary": total,
            "api_calls": session.calls.total(),
            "api_calls_by_operation": session.calls.by_operation(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", drift::text(&session.stack.name, &regions));
        println!("AWS API calls: {}", session.calls.total());
    }
    if let Some(path) = metrics {
        write_atomically(
            path,
            &drift::metrics(&session.stack.name, &regions, true, now),
        )?;
    }
    Ok(if total.total() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The scheduled job: a check every `interval`; a failed run is reported and the loop goes
/// on; SIGTERM or Ctrl-C ends it between runs.
async fn drift_every(
    common: &Common,
    json: bool,
    metrics: Option<&Path>,
    interval: Duration,
) -> Result<ExitCode> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        if let Err(e) = drift_once(common, json, metrics).await {
            eprintln!("drift run failed: {e:#}");
        }
        eprintln!("next drift run in {}", humantime::format_duration(interval));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    eprintln!("drift: stopped");
    Ok(ExitCode::SUCCESS)
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn confirm(verb: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        eprint!("Do you want to {verb} these changes? Only 'yes' is accepted: ");
    } else {
        eprint!("\nDo you want to {verb} these changes?\n  Only 'yes' is accepted: ");
    }
    std::io::stderr().flush()?;
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

struct RegionState {
    cx: Cx,
    desired: Vec<Resource>,
    /// The plan's resources of the region, also in destroy: their dependencies order deletes.
    planned: Vec<Resource>,
    live: Vec<Live>,
    changes: Vec<Change>,
}

struct Session {
    stack: Stack,
    regions: Vec<RegionState>,
    calls: Arc<CallCounter>,
    parallelism: usize,
    /// Shared by every region's progress: set on Ctrl-C.
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The stack's lock, for apply and destroy.
    lock: Option<lock::Held>,
}

/// Why a session reads AWS: to change it, to destroy the stack, or only to compare.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Plan,
    /// Apply and destroy hold the stack's lock.
    Apply,
    Destroy,
    Drift,
}

impl Session {
    /// Loads the plan, reads every selected region's live state and diffs it.
    async fn open(common: &Common, purpose: Purpose) -> Result<Session> {
        let destroy = purpose == Purpose::Destroy;
        let stack = plan::load(&common.plan, common.stack.as_deref())?;
        for r in &common.regions {
            if !stack.regions.contains_key(r) {
                bail!(
                    "--region {r}: the plan has no such region (it declares {})",
                    stack.regions.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        let selected: Vec<&String> = stack
            .regions
            .keys()
            .filter(|r| common.regions.is_empty() || common.regions.contains(r))
            .collect();
        let calls = Arc::new(CallCounter::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Taken before the live state is read, so nothing changes it between read and apply.
        let lock = match purpose {
            Purpose::Apply | Purpose::Destroy => {
                let clients =
                    aws::clients(lock::REGION, common.endpoint_url.as_deref(), calls.clone()).await;
                let command = if destroy { "destroy" } else { "apply" };
                let plan = common.plan.display().to_string();
                let wait = common.lock_timeout;
                Some(lock::take(&clients, &stack.name, command, &plan, wait, stop.clone()).await?)
            }
            _ => None,
        };
        let start = Instant::now();
        let env_secs = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(default)
        };
        let reads = selected.iter().map(|region| {
            let calls = calls.clone();
            let stop = stop.clone();
            let stack = &stack;
            async move {
                let cx = Cx {
                    stack: stack.name.clone(),
                    region: region.to_string(),
                    aws: aws::clients(region, common.endpoint_url.as_deref(), calls).await,
                    progress: Progress::new(region, start).with_stop(stop.clone()),
                    dependency_timeout: Duration::from_secs_f64(env_secs(
                        "TSPROV_DEPENDENCY_TIMEOUT",
                        300.0,
                    )),
                    wait_scale: env_secs("TSPROV_WAIT_SCALE", 1.0),
                    find_orphans: matches!(purpose, Purpose::Destroy),
                };
                let live = discover(&cx)
                    .await
                    .with_context(|| format!("reading live state in {region}"))?;
                let desired = if destroy {
                    Vec::new()
                } else {
                    stack.regions[*region].clone()
                };
                let mut changes = diff::diff(&desired, &live);
                if purpose != Purpose::Drift {
                    diff::block_data_loss(&mut changes, &live, &common.allow_destroy);
                    block_name_conflicts(&cx, &mut changes).await?;
                }
                Ok::<_, anyhow::Error>(RegionState {
                    cx,
                    desired,
                    planned: stack.regions[*region].clone(),
                    live,
                    changes,
                })
            }
        });
        let regions = match futures::future::try_join_all(reads).await {
            Ok(regions) => regions,
            Err(e) => {
                if let Some(lock) = lock {
                    lock.release().await;
                }
                return Err(e);
            }
        };
        Ok(Session {
            stack,
            regions,
            calls,
            parallelism: common.parallelism,
            stop,
            lock,
        })
    }

    async fn release_lock(&mut self) {
        if let Some(lock) = self.lock.take() {
            lock.release().await;
        }
    }

    fn region_plans(&self) -> Vec<RegionPlan> {
        self.regions
            .iter()
            .map(|r| RegionPlan {
                region: r.cx.region.clone(),
                summary: Summary::of(&r.changes),
                changes: r.changes.clone(),
            })
            .collect()
    }

    fn plan_json(&self, plans: &[RegionPlan]) -> serde_json::Value {
        let total = plans.iter().fold(Summary::default(), |mut t, p| {
            t.add += p.summary.add;
            t.change += p.summary.change;
            t.replace += p.summary.replace;
            t.destroy += p.summary.destroy;
            t.blocked += p.summary.blocked;
            t
        });
        serde_json::json!({
            "format_version": 1,
            "stack": self.stack.name,
            "plan_file": self.stack.file,
            "regions": plans,
            "summary": total,
            "api_calls": self.calls.total(),
            "api_calls_by_operation": self.calls.by_operation(),
        })
    }

    /// A fingerprint of everything read from AWS: a saved plan applies only to the same live state.
    fn live_fingerprint(&self) -> u64 {
        let mut all: Vec<(&str, &Live)> = self
            .regions
            .iter()
            .flat_map(|r| r.live.iter().map(move |l| (r.cx.region.as_str(), l)))
            .collect();
        all.sort_by(|a, b| (a.0, &a.1.address, &a.1.id).cmp(&(b.0, &b.1.address, &b.1.id)));
        plan::read::fnv(serde_json::to_string(&all).unwrap_or_default().as_bytes())
    }

    fn save(&self, path: &Path, common: &Common) -> Result<()> {
        let saved = SavedPlan {
            format: SAVED_FORMAT.into(),
            plan_file: common.plan.clone(),
            stack: self.stack.name.clone(),
            regions: self.regions.iter().map(|r| r.cx.region.clone()).collect(),
            source_hash: self.stack.source_hash,
            live_fingerprint: self.live_fingerprint(),
            plan: self.plan_json(&self.region_plans()),
        };
        std::fs::write(path, serde_json::to_string_pretty(&saved)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// A create whose AWS name is already taken by a resource that is not this stack's is
/// blocked: tsprov never adopts or changes what it did not create.
async fn block_name_conflicts(cx: &Cx, changes: &mut [Change]) -> Result<()> {
    let checks = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.action == diff::Action::Create)
        .map(|(i, c)| async move {
            let kind = kinds::by_name(&c.address.kind).expect("changes only hold known kinds");
            let taken = kind
                .name_taken(cx, &c.address)
                .await
                .with_context(|| format!("checking that the name of {} is free", c.address))?;
            Ok::<_, anyhow::Error>((i, taken))
        });
    for (i, taken) in futures::future::try_join_all(checks).await? {
        let Some(tags) = taken else { continue };
        let owner = match tags.get(TAG_STACK) {
            Some(s) if s == &cx.stack => "it is this stack's but was not found live (still being deleted?); try again once it is gone".to_string(),
            Some(s) => format!("it belongs to stack {s:?}"),
            None => "it carries no tsprov:stack tag".to_string(),
        };
        changes[i].blocked = Some(format!("a resource with this name already exists and {owner}: tsprov will not adopt or change it; rename the block, or remove that resource"));
    }
    Ok(())
}

/// Every live resource of the stack in one region: each kind's batched read, all at once.
async fn discover(cx: &Cx) -> Result<Vec<Live>> {
    let reads = kinds::registry().iter().map(|k| async move {
        kinds::discover_own(*k, cx)
            .await
            .with_context(|| format!("discovering {}", k.name()))
    });
    Ok(futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

const SAVED_FORMAT: &str = "tsprov-saved-plan/1";

#[derive(Serialize, Deserialize)]
struct SavedPlan {
    format: String,
    plan_file: PathBuf,
    stack: String,
    regions: Vec<String>,
    source_hash: u64,
    live_fingerprint: u64,
    plan: serde_json::Value,
}

impl SavedPlan {
    fn read_if_saved(path: &Path) -> Result<Option<SavedPlan>> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        if !text.trim_start().starts_with('{') {
            return Ok(None);
        }
        let saved: SavedPlan = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a plan saved by `tsprov plan --out`",
                path.display()
            )
        })?;
        if saved.format != SAVED_FORMAT {
            bail!(
                "{}: saved plan format {:?} is not {SAVED_FORMAT:?}",
                path.display(),
                saved.format
            );
        }
        Ok(Some(saved))
    }

    fn common(&self, given: &Common) -> Common {
        Common {
            plan: self.plan_file.clone(),
            regions: self.regions.clone(),
            stack: Some(self.stack.clone()),
            ..given.clone()
        }
    }

    fn check_unchanged(&self, session: &Session) -> Result<()> {
        if session.stack.source_hash != self.source_hash {
            bail!(
                "{} changed since this plan was saved; run `tsprov plan --out` again",
                self.plan_file.display()
            );
        }
        if session.live_fingerprint() != self.live_fingerprint {
            bail!("live state in AWS changed since this plan was saved; nothing was applied. Run `tsprov plan --out` again");
        }
        Ok(())
    }
}
