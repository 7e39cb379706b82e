//! Tables in foreign-key order: referenced tables before the tables that reference them, where the cycles
//! allow it (each cycle is reported and broken at its first table). Used for SQLite schemas and for
//! PostgreSQL catalogs alike.

use crate::migrate::introspect::Schema;

/// Table indexes in creation order (Kahn's algorithm over foreign keys, self references ignored,
/// ties in `sqlite_schema` order) and the cycles met (each broken at its first table).
pub(super) fn dependency_order(schema: &Schema) -> (Vec<usize>, Vec<Vec<String>>) {
    let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
    let references: Vec<Vec<&str>> = schema
        .tables
        .iter()
        .map(|t| t.foreign_keys.iter().map(|f| f.table.as_str()).collect())
        .collect();
    order_by_references(&names, &references)
}

/// Kahn's algorithm over `references[i]` (the tables table `i` points at, matched by exact name, then
/// ignoring ASCII case as SQLite does; self references ignored): table indexes in an order that puts
/// referenced tables first, ties in the given order, and the cycles met, each broken at its first table.
pub(crate) fn order_by_references(
    names: &[&str],
    references: &[Vec<&str>],
) -> (Vec<usize>, Vec<Vec<String>>) {
    let n = names.len();
    let index_of = |name: &str| {
        names
            .iter()
            .position(|t| *t == name)
            .or_else(|| names.iter().position(|t| t.eq_ignore_ascii_case(name)))
    };
    let deps: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut d: Vec<usize> = references
                .get(i)
                .into_iter()
                .flatten()
                .filter_map(|r| index_of(r))
                .filter(|&j| j != i)
                .collect();
            d.sort_unstable();
            d.dedup();
            d
        })
        .collect();
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut cycles = Vec::new();
    while order.len() < n {
        let ready = (0..n).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
        let next = match ready {
            Some(i) => i,
            None => {
                // A cycle: report the tables still waiting on one another, then break it at the first.
                let Some(first) = (0..n).find(|&i| !done[i]) else {
                    break;
                };
                let mut cycle = vec![first];
                let mut at = first;
                while let Some(&d) = deps[at].iter().find(|&&d| !done[d]) {
                    if let Some(p) = cycle.iter().position(|&c| c == d) {
                        cycle.drain(..p);
                        break;
                    }
                    cycle.push(d);
                    at = d;
                }
                cycles.push(cycle.iter().map(|&i| names[i].to_owned()).collect());
                cycle[0]
            }
        };
        done[next] = true;
        order.push(next);
    }
    (order, cycles)
}
