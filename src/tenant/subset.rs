//! The subset: which rows belong to one tenant. From the root row, foreign keys are followed
//!
//! - **downstream** from every row the tenant owns: the rows that reference it are the tenant's too (a
//!   user's posts, the comments on those posts, …) — except rows of the root table itself, which are other
//!   tenants;
//! - **upstream** from every row taken: the rows it references, taken as *references* only (the lookup row,
//!   the other user who wrote a comment on the tenant's post), which are followed further upstream but never
//!   downstream (a referenced country does not bring every user of that country).
//!
//! Rows are found by their identity alone, in batches of keys passed as parameters, until nothing new
//! turns up; a row first met as a reference and later reached downstream becomes owned. Cycles and
//! self-references end by themselves, since a row is taken once. Tables the spec `include`s are taken whole
//! as references; `stop`ped relations are not followed.

use serde::Serialize;

use super::graph::{Graph, Identity};
use super::keys::{Key, KeySet, Taken};
use super::query::{Filter, Reader};
use crate::error::Result;
use crate::observe::RunContext;

/// Keys handed to one round of queries (each round's query is chunked further by the reader).
const ROUND: usize = 50_000;

/// How many rows a relation brought into the subset, and in which direction it was followed.
#[derive(Debug, Clone, Serialize)]
pub struct PathCount {
    /// `posts.user_id → users.id`.
    pub relation: String,
    /// `down` (rows referencing owned rows) or `up` (rows referenced).
    pub direction: &'static str,
    /// Rows it brought in that were not taken before.
    pub rows: u64,
    /// Declared in the schema (false: from the spec).
    pub declared: bool,
}

/// The rows of one tenant, table by table.
#[derive(Debug)]
pub struct Subset {
    /// Taken rows, per node of the graph.
    pub sets: Vec<KeySet>,
    /// The nodes that belong in the bundle (reachable from the root, or included), in graph order.
    pub tables: Vec<usize>,
    /// Rows each relation brought in.
    pub paths: Vec<PathCount>,
}

/// The tables a tenant's bundle holds, whatever rows they turn out to have: the root table, every table
/// downstream of it (never re-entering the root table), included tables, and everything upstream of those.
pub fn reachable(graph: &Graph, root: usize, include: &[usize]) -> Vec<usize> {
    let n = graph.nodes.len();
    let mut owned = vec![false; n];
    owned[root] = true;
    let mut changed = true;
    while changed {
        changed = false;
        for e in graph.edges.iter().filter(|e| !e.stopped) {
            if owned[e.parent] && !owned[e.child] && e.child != root {
                owned[e.child] = true;
                changed = true;
            }
        }
    }
    let mut taken = owned;
    for &i in include {
        taken[i] = true;
    }
    changed = true;
    while changed {
        changed = false;
        for e in graph.edges.iter().filter(|e| !e.stopped) {
            if taken[e.child] && !taken[e.parent] {
                taken[e.parent] = true;
                changed = true;
            }
        }
    }
    (0..n).filter(|&i| taken[i]).collect()
}

/// Finds the subset of `roots` (rows of node `root`), plus the whole of `include`d nodes. The run's token
/// is checked between rounds.
pub fn find(
    reader: &mut Reader<'_, '_>,
    graph: &Graph,
    root: usize,
    roots: Vec<Key>,
    include: &[usize],
    label: &str,
    ctx: &RunContext,
) -> Result<Subset> {
    let n = graph.nodes.len();
    let mut sets: Vec<KeySet> = (0..n).map(|_| KeySet::default()).collect();
    let mut down: Vec<Vec<Key>> = vec![Vec::new(); n];
    let mut up: Vec<Vec<Key>> = vec![Vec::new(); n];
    let mut counts = vec![0u64; graph.edges.len() * 2];
    for key in roots {
        if sets[root].take(&key, true) == Taken::New {
            up[root].push(key.clone());
            down[root].push(key);
        }
    }
    for &i in include {
        let node = &graph.nodes[i];
        reader.identities(node, Filter::All, label, &mut |key| {
            if sets[i].take(&key, false) == Taken::New {
                up[i].push(key);
            }
            Ok(())
        })?;
    }
    loop {
        ctx.cancel.check()?;
        if let Some(i) = (0..n).find(|&i| !down[i].is_empty()) {
            let batch = take_round(&mut down[i]);
            for (e_index, e) in graph.edges.iter().enumerate() {
                if e.parent != i || e.stopped || e.child == root {
                    continue;
                }
                let child = e.child;
                let filter = Filter::Down {
                    edge: e,
                    parent: &graph.nodes[i],
                    keys: &batch,
                };
                let (set, down_q, up_q) = (&mut sets[child], &mut down[child], &mut up[child]);
                let count = &mut counts[e_index * 2];
                reader.identities(&graph.nodes[child], filter, label, &mut |key| {
                    match set.take(&key, true) {
                        Taken::New => {
                            *count += 1;
                            up_q.push(key.clone());
                            down_q.push(key);
                        }
                        Taken::NowOwned => down_q.push(key),
                        Taken::Known => {}
                    }
                    Ok(())
                })?;
            }
            continue;
        }
        let Some(i) = (0..n).find(|&i| !up[i].is_empty()) else {
            break;
        };
        let batch = take_round(&mut up[i]);
        for (e_index, e) in graph.edges.iter().enumerate() {
            if e.child != i || e.stopped {
                continue;
            }
            let parent = e.parent;
            let by_identity =
                matches!(&graph.nodes[parent].identity, Identity::Key(cols) if *cols == e.to);
            let count = &mut counts[e_index * 2 + 1];
            if by_identity {
                // The values the rows point at, then only those not taken yet, looked up in the parent
                // (so a dangling reference takes nothing).
                let mut unknown = Vec::new();
                let set = &sets[parent];
                reader.referenced(
                    &graph.nodes[i],
                    &graph.nodes[parent],
                    e,
                    &batch,
                    label,
                    &mut |key| {
                        if !set.contains(&key) {
                            unknown.push(key);
                        }
                        Ok(())
                    },
                )?;
                if unknown.is_empty() {
                    continue;
                }
                let (set, up_q) = (&mut sets[parent], &mut up[parent]);
                let filter = Filter::Keys { keys: &unknown };
                reader.identities(&graph.nodes[parent], filter, label, &mut |key| {
                    if set.take(&key, false) == Taken::New {
                        *count += 1;
                        up_q.push(key);
                    }
                    Ok(())
                })?;
                continue;
            }
            let filter = Filter::Up {
                edge: e,
                child: &graph.nodes[i],
                keys: &batch,
            };
            let (set, up_q) = (&mut sets[parent], &mut up[parent]);
            reader.identities(&graph.nodes[parent], filter, label, &mut |key| {
                if set.take(&key, false) == Taken::New {
                    *count += 1;
                    up_q.push(key);
                }
                Ok(())
            })?;
        }
    }
    let mut paths = Vec::new();
    for (e_index, e) in graph.edges.iter().enumerate() {
        for (down, direction) in [(true, "down"), (false, "up")] {
            let rows = counts[e_index * 2 + usize::from(!down)];
            if rows > 0 {
                paths.push(PathCount {
                    relation: graph.edge_text(e),
                    direction,
                    rows,
                    declared: e.declared,
                });
            }
        }
    }
    Ok(Subset {
        sets,
        tables: reachable(graph, root, include),
        paths,
    })
}

/// The next round of keys off a queue.
fn take_round(queue: &mut Vec<Key>) -> Vec<Key> {
    let keep = queue.len().saturating_sub(ROUND);
    queue.split_off(keep)
}
