//! The concurrent executor of one region's changes. Each step starts as soon as
//! the steps it depends on are done (not level by level), with a bound on
//! in-flight steps; a failed step skips only what depends on it.
//!
//! Order: creates and updates after the creates of what they refer to; a delete
//! before the deletes of what the live resource refers to (NAT gateway before
//! its EIP and subnet, subnet before VPC); a replacement deletes, then creates.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Dfs;
use petgraph::Direction;
use serde::Serialize;

use crate::aws;
use crate::diff::{self, Action, Change};
use crate::kinds::{self, Cx, Desired, Kind, Live};
use crate::model::{Address, Resource};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Create,
    Update,
    Delete,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub address: Address,
    pub step: Step,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `ok`, `failed` or `skipped`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
}

struct Node<'a> {
    step: Step,
    change: &'a Change,
    live: Option<&'a Live>,
}

pub async fn run(
    cx: &Cx,
    desired: &[Resource],
    planned: &[Resource],
    live: &[Live],
    changes: &[Change],
    max_in_flight: usize,
) -> Vec<Outcome> {
    let live_of = |c: &Change| {
        live.iter()
            .find(|l| l.address == c.address && Some(&l.id) == c.id.as_ref())
    };
    let mut graph: DiGraph<Node, ()> = DiGraph::new();
    let mut creates: HashMap<&Address, NodeIndex> = HashMap::new();
    let mut writes: Vec<NodeIndex> = Vec::new();
    // (kind, id) -> its delete step: ids are unique only within a kind (`<stack>-main`).
    let mut deletes: HashMap<(&str, &str), NodeIndex> = HashMap::new();
    for c in changes {
        let l = live_of(c);
        if matches!(c.action, Action::Delete | Action::Replace) {
            let d = graph.add_node(Node {
                step: Step::Delete,
                change: c,
                live: l,
            });
            if let Some(id) = &c.id {
                deletes.insert((c.address.kind.as_str(), id.as_str()), d);
            }
        }
        let step = match c.action {
            Action::Create | Action::Replace => Step::Create,
            Action::Update => Step::Update,
            Action::Delete => continue,
        };
        let n = graph.add_node(Node {
            step,
            change: c,
            live: l,
        });
        if step == Step::Create {
            creates.insert(&c.address, n);
        }
        writes.push(n);
    }
    let by_address: HashMap<&Address, &Resource> =
        desired.iter().map(|r| (&r.address, r)).collect();
    for &n in &writes {
        let address = &graph[n].change.address;
        for dep in by_address
            .get(address)
            .map(|r| r.dependencies())
            .unwrap_or_default()
        {
            if let Some(&d) = creates.get(&dep) {
                graph.update_edge(d, n, ());
            }
        }
        // A create waits for the deletes of its kind (its own replacement's among them):
        // what goes may hold what comes needs (a CIDR, a group name). Deletes never wait
        // for creates, so this adds no cycle.
        if graph[n].step == Step::Create {
            let kind = &graph[n].change.address.kind;
            let same_kind: Vec<NodeIndex> = deletes
                .values()
                .copied()
                .filter(|&d| &graph[d].change.address.kind == kind)
                .collect();
            for d in same_kind {
                graph.update_edge(d, n, ());
            }
        }
    }
    for (&(kind_name, id), &d) in &deletes {
        let Some(l) = graph[d].live else { continue };
        let Some(kind) = kinds::by_name(kind_name) else {
            continue;
        };
        let mut refs = Vec::new();
        for field in kind.fields() {
            if let Some(v) = l.attrs.get(field.name) {
                field.ty.live_refs(v, &mut refs);
            }
        }
        for (target_kinds, target_id) in refs {
            // Ids are unique only per kind: a cluster and its subnet group may share a name.
            for target_kind in target_kinds
                .iter()
                .filter(|k| (**k, target_id) != (kind_name, id))
            {
                if let Some(&target) = deletes.get(&(*target_kind, target_id)) {
                    graph.update_edge(d, target, ());
                }
            }
        }
    }

    // What the live state cannot tell (AWS does not read back a replication group's subnet
    // group), the plan can: a resource goes before what it depends on in the plan.
    let mut deletes_by_address: HashMap<&Address, Vec<NodeIndex>> = HashMap::new();
    for &d in deletes.values() {
        deletes_by_address
            .entry(&graph[d].change.address)
            .or_default()
            .push(d);
    }
    for r in planned {
        for &d in deletes_by_address.get(&r.address).into_iter().flatten() {
            for dep in r.dependencies() {
                for &target in deletes_by_address.get(&dep).into_iter().flatten() {
                    graph.update_edge(d, target, ());
                }
            }
        }
    }

    // Ids known now; creates add theirs as they finish.
    let renewed: HashSet<&Address> = creates.keys().copied().collect();
    let ids: Mutex<HashMap<Address, String>> = Mutex::new(
        live.iter()
            .filter(|l| !renewed.contains(&l.address))
            .map(|l| (l.address.clone(), l.id.clone()))
            .collect(),
    );

    let mut waiting: HashMap<NodeIndex, usize> = graph
        .node_indices()
        .map(|n| (n, graph.neighbors_directed(n, Direction::Incoming).count()))
        .collect();
    let mut ready: Vec<NodeIndex> = waiting
        .iter()
        .filter(|(_, c)| **c == 0)
        .map(|(n, _)| *n)
        .collect();
    ready.sort();
    let mut outcomes = Vec::new();
    let mut skipped: HashSet<NodeIndex> = HashSet::new();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < max_in_flight.max(1) && !cx.progress.stopped() {
            let Some(n) = ready.pop() else { break };
            let node = &graph[n];
            let ids = &ids;
            let by_address = &by_address;
            running.push(async move {
                let start = Instant::now();
                let result = execute(cx, node, by_address, ids).await;
                (n, result, start.elapsed().as_secs_f64())
            });
        }
        let Some((n, result, seconds)) = running.next().await else {
            break;
        };
        let node = &graph[n];
        let address = node.change.address.clone();
        match result {
            Ok(id) => {
                cx.progress.line(&format!(
                    "{} {address}: {} {}({seconds:.1}s)",
                    symbol(node.step),
                    past(node.step),
                    id.as_deref().map(|i| format!("{i} ")).unwrap_or_default()
                ));
                outcomes.push(Outcome {
                    address,
                    step: node.step,
                    id,
                    status: "ok",
                    error: None,
                    seconds,
                });
                for next in graph.neighbors_directed(n, Direction::Outgoing) {
                    let w = waiting.get_mut(&next).unwrap();
                    *w -= 1;
                    if *w == 0 && !skipped.contains(&next) {
                        ready.push(next);
                    }
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                cx.progress
                    .line(&format!("{} {address}: FAILED: {error}", symbol(node.step)));
                outcomes.push(Outcome {
                    address: address.clone(),
                    step: node.step,
                    id: node.change.id.clone(),
                    status: "failed",
                    error: Some(error),
                    seconds,
                });
                let mut dfs = Dfs::new(&graph, n);
                dfs.next(&graph);
                while let Some(d) = dfs.next(&graph) {
                    if skipped.insert(d) {
                        let dn = &graph[d];
                        outcomes.push(Outcome {
                            address: dn.change.address.clone(),
                            step: dn.step,
                            id: dn.change.id.clone(),
                            status: "skipped",
                            error: Some(format!(
                                "not started: it waits for {address}, which failed"
                            )),
                            seconds: 0.0,
                        });
                    }
                }
            }
        }
    }
    // Every step ends in an outcome; one that never became ready is reported, never dropped.
    let done: HashSet<(Address, Step)> = outcomes
        .iter()
        .map(|o| (o.address.clone(), o.step))
        .collect();
    for n in graph.node_indices() {
        let node = &graph[n];
        if !done.contains(&(node.change.address.clone(), node.step)) {
            let (status, why) = if cx.progress.stopped() {
                ("skipped", "not started: interrupted")
            } else {
                (
                    "failed",
                    "not started: its ordering depends on itself (a cycle between steps)",
                )
            };
            outcomes.push(Outcome {
                address: node.change.address.clone(),
                step: node.step,
                id: node.change.id.clone(),
                status,
                error: Some(why.into()),
                seconds: 0.0,
            });
        }
    }
    outcomes
}

async fn execute(
    cx: &Cx,
    node: &Node<'_>,
    by_address: &HashMap<&Address, &Resource>,
    ids: &Mutex<HashMap<Address, String>>,
) -> anyhow::Result<Option<String>> {
    let kind = kinds::by_name(&node.change.address.kind).expect("changes only hold known kinds");
    let desired = || -> anyhow::Result<Desired> {
        let r = by_address
            .get(&node.change.address)
            .ok_or_else(|| anyhow::anyhow!("{} is not in the plan", node.change.address))?;
        let known = ids.lock().unwrap();
        let attrs: crate::model::Attrs = r
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.resolve(&|a| known.get(a).cloned())))
            .collect();
        if let Some((k, _)) = attrs.iter().find(|(_, v)| v.contains_unknown()) {
            anyhow::bail!("{}: `{k}` refers to a resource that has no id", r.address);
        }
        Ok(Desired {
            address: r.address.clone(),
            attrs,
            tags: r.tags.clone(),
        })
    };
    cx.progress.line(&format!(
        "{} {}: {}...",
        symbol(node.step),
        node.change.address,
        present(node.step)
    ));
    match node.step {
        Step::Create => {
            let want = desired()?;
            let created = create_exactly_once(cx, kind, &want).await?;
            ids.lock()
                .unwrap()
                .insert(want.address.clone(), created.id.clone());
            Ok(Some(created.id))
        }
        Step::Update => {
            let want = desired()?;
            let live = node
                .live
                .ok_or_else(|| anyhow::anyhow!("{} vanished", node.change.address))?;
            let changed: Vec<String> = node
                .change
                .attributes
                .iter()
                .map(|a| a.name.clone())
                .collect();
            kind.update(cx, &want, live, &changed).await?;
            Ok(Some(live.id.clone()))
        }
        Step::Delete => {
            let live = node
                .live
                .ok_or_else(|| anyhow::anyhow!("{} vanished", node.change.address))?;
            kind.delete(cx, live).await?;
            Ok(Some(live.id.clone()))
        }
    }
}

/// How often a create that failed transiently is tried again (after a look for it).
const CREATE_ATTEMPTS: u32 = 5;

/// Creates `want`, and never twice. A create that failed may have happened all the
/// same (its answer lost with a dropped connection, a 500 after the work was done, a
/// retry refused as a duplicate), so before trying again look for the resource by its
/// tags: adopt it if it is there (finishing the settings the create did not get to),
/// else try again while the error is one that may pass.
async fn create_exactly_once(cx: &Cx, kind: &dyn Kind, want: &Desired) -> anyhow::Result<Live> {
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        let failure = match kind.create(cx, want).await {
            Ok(created) => return Ok(created),
            Err(e) => e,
        };
        // Only an AWS call's failure leaves it open whether the create happened; a waiter
        // that timed out or was interrupted knows it did, and that it is not ready.
        if cx.progress.stopped() || !aws::is_api_error(&failure) {
            return Err(failure);
        }
        if aws::is_quota(&failure) {
            return Err(failure.context(
                "an AWS service quota is reached; not retried, as waiting does not help: \
                 raise the quota (Service Quotas console) or remove resources, then run again",
            ));
        }
        let found: Vec<Live> = match kinds::discover_own(kind, cx).await {
            Ok(all) => all
                .into_iter()
                .filter(|l| l.address == want.address)
                .collect(),
            Err(e) => {
                return Err(failure.context(format!(
                    "and it could not be checked whether the create happened ({e:#}); \
                     the next run finds it by its tags if it did"
                )))
            }
        };
        if let Some((adopted, extra)) = found.split_first() {
            for duplicate in extra {
                kind.delete(cx, duplicate).await?;
            }
            let unsettled: Vec<String> =
                diff::attribute_changes(kind, &want.attrs, &want.tags, adopted)
                    .into_iter()
                    .filter(|a| !a.forces_replacement)
                    .map(|a| a.name)
                    .collect();
            if !unsettled.is_empty() {
                kind.update(cx, want, adopted, &unsettled).await?;
            }
            cx.progress.line(&format!(
                "  {}: the create answered \"{failure:#}\" but had happened: adopted {}",
                want.address, adopted.id
            ));
            return Ok(adopted.clone());
        }
        let may_pass = aws::is_transient(&failure) || aws::is_not_found(&failure);
        if !may_pass || attempt >= CREATE_ATTEMPTS {
            return Err(failure);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(8));
        attempt += 1;
    }
}

fn symbol(step: Step) -> &'static str {
    match step {
        Step::Create => "+",
        Step::Update => "~",
        Step::Delete => "-",
    }
}

fn present(step: Step) -> &'static str {
    match step {
        Step::Create => "creating",
        Step::Update => "updating",
        Step::Delete => "destroying",
    }
}

fn past(step: Step) -> &'static str {
    match step {
        Step::Create => "created",
        Step::Update => "updated",
        Step::Delete => "destroyed",
    }
}
