//! The schema a subset is taken from, as a graph: the source's tables (read by migrate's schema readers,
//! SQLite's without profiling its rows) with the types their values are read as, each table's row identity,
//! and its relations — the declared foreign keys plus the spec's — minus the tables and paths the spec
//! leaves out. Downstream edges lead from a row to the rows that reference it; upstream edges to the rows
//! it references.

use std::collections::HashSet;

use super::spec::{table_columns, Spec};
use crate::db::quote_ident;
use crate::error::{Error, Result};
use crate::migrate::plan::{Plan, PlanTable};
use crate::migrate::rows::CopyTable;
use crate::migrate::{Conn, PgType};

/// How a table's rows are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// By its primary key (indexes into the table's columns).
    Key(Vec<String>),
    /// SQLite's `rowid` (a table without a declared key).
    RowId,
    /// PostgreSQL's `ctid` (a table without a primary key; stable within the export's snapshot).
    Ctid,
}

/// One table of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// The table as planned: columns, types, keys.
    pub plan: PlanTable,
    /// The columns read (generated ones are left out) and the type each is read as.
    pub copy: CopyTable,
    /// How rows are told apart.
    pub identity: Identity,
}

impl Node {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// The type of column `name` (text when the plan does not know it).
    pub fn type_of(&self, name: &str) -> PgType {
        self.plan
            .columns
            .iter()
            .find(|c| c.name == name)
            .map_or(PgType::Text, |c| c.translation.pg.clone())
    }

    /// The identity columns with their types (`rowid`/`ctid` as a bigint / text pseudo-column).
    pub fn identity_columns(&self) -> Vec<(String, PgType)> {
        match &self.identity {
            Identity::Key(cols) => cols.iter().map(|c| (c.clone(), self.type_of(c))).collect(),
            Identity::RowId => vec![("rowid".into(), PgType::BigInt)],
            Identity::Ctid => vec![("ctid".into(), PgType::Other("tid".into()))],
        }
    }

    /// The single integer key the database generates (an identity, serial or rowid-alias column), if any:
    /// what `--remap-keys` gives new values.
    pub fn generated_key(&self) -> Option<&str> {
        match self.plan.primary_key.as_slice() {
            [key] => self
                .plan
                .columns
                .iter()
                .find(|c| &c.name == key && c.translation.identity && c.translation.pg.is_integer())
                .map(|c| c.name.as_str()),
            _ => None,
        }
    }
}

/// A relation: rows of `child` whose `from` columns equal `to` columns of a `parent` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The referencing table (index into [`Graph::nodes`]).
    pub child: usize,
    /// The referencing columns.
    pub from: Vec<String>,
    /// The referenced table.
    pub parent: usize,
    /// The referenced columns.
    pub to: Vec<String>,
    /// Declared in the schema (false: from the spec).
    pub declared: bool,
    /// Not followed (the spec's `stop`).
    pub stopped: bool,
}

/// The source's tables and relations.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Tables in dependency order (referenced before referencing, cycles broken).
    pub nodes: Vec<Node>,
    /// Relations.
    pub edges: Vec<Edge>,
    /// Foreign-key cycles, as the plan found them.
    pub cycles: Vec<Vec<String>>,
}

/// Reads the source's schema into a plan: SQLite's through its catalog (declared types, no profiling: the
/// export reads one tenant's rows, not every table whole), PostgreSQL's through `pg_catalog`.
pub fn read_plan(conn: &mut Conn, label: &str, spec: &Spec) -> Result<Plan> {
    let rules = spec.cast_rules()?;
    match conn {
        Conn::Sqlite(c) => {
            let schema = crate::migrate::Schema::read(c, label)?;
            Plan::from_schema(&schema, &[], &rules)
        }
        Conn::Postgres(c) => {
            let mut plan = crate::migrate::pg_schema::read_plan(c, "public", label)?;
            for t in &mut plan.tables {
                for col in &mut t.columns {
                    if let Some(ty) = rules.columns.get(&format!("{}.{}", t.name, col.name)) {
                        col.translation.pg = PgType::parse(ty)?;
                    }
                }
            }
            Ok(plan)
        }
    }
}

impl Graph {
    /// The graph of `plan` as the spec shapes it; `postgres` says which pseudo-column identifies rows of
    /// tables without a primary key.
    pub fn new(plan: &Plan, spec: &Spec, postgres: bool) -> Result<Graph> {
        let known = |name: &str| plan.tables.iter().any(|t| t.name == name);
        for name in spec.exclude.iter().chain(&spec.include) {
            if !known(name) {
                return Err(no_table(name));
            }
        }
        let nodes: Vec<Node> = plan
            .tables
            .iter()
            .filter(|t| !spec.exclude.contains(&t.name))
            .map(|t| Node {
                plan: t.clone(),
                copy: CopyTable::from_plan(t),
                identity: match (t.primary_key.is_empty(), postgres) {
                    (false, _) => Identity::Key(t.primary_key.clone()),
                    (true, false) => Identity::RowId,
                    (true, true) => Identity::Ctid,
                },
            })
            .collect();
        let index = |name: &str| nodes.iter().position(|n| n.name() == name);
        let mut edges = Vec::new();
        for (child, node) in nodes.iter().enumerate() {
            for fk in &node.plan.foreign_keys {
                if let Some(parent) = index(&fk.table) {
                    edges.push(Edge {
                        child,
                        from: fk.from.clone(),
                        parent,
                        to: fk.to.clone(),
                        declared: true,
                        stopped: false,
                    });
                }
            }
        }
        for r in &spec.relations {
            edges.push(relation(&nodes, &r.from, &r.to)?);
        }
        let stop_tables: HashSet<&str> = spec
            .stop
            .iter()
            .filter(|s| known(s))
            .map(String::as_str)
            .collect();
        for stop in spec.stop.iter().filter(|s| !known(s)) {
            let (table, columns) = table_columns(stop).ok_or_else(|| {
                Error::config(format!(
                    "stop {stop:?}: name a table, or a relation by its referencing table.column"
                ))
            })?;
            let found = edges
                .iter_mut()
                .filter(|e| nodes[e.child].name() == table && e.from == columns)
                .map(|e| e.stopped = true)
                .count();
            if found == 0 {
                return Err(Error::config(format!(
                    "stop {stop:?}: {} has no relation on ({})",
                    quote_ident(&table),
                    columns.join(", ")
                )));
            }
        }
        for e in &mut edges {
            let ends = [nodes[e.child].name(), nodes[e.parent].name()];
            if ends.iter().any(|t| stop_tables.contains(t)) {
                e.stopped = true;
            }
        }
        Ok(Graph {
            nodes,
            edges,
            cycles: plan.cycles.clone(),
        })
    }

    /// The table called `name`.
    pub fn find(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name() == name)
            .ok_or_else(|| no_table(name))
    }

    /// How an edge reads in the plan: `posts.user_id → users.id`.
    pub fn edge_text(&self, e: &Edge) -> String {
        format!(
            "{}.{} → {}.{}",
            self.nodes[e.child].name(),
            e.from.join(","),
            self.nodes[e.parent].name(),
            e.to.join(",")
        )
    }
}

fn no_table(name: &str) -> Error {
    Error::config(format!("the source has no table {}", quote_ident(name)))
}

/// A spec relation as an edge, its tables and columns checked.
fn relation(nodes: &[Node], from: &str, to: &str) -> Result<Edge> {
    let find = |name: &str| {
        nodes
            .iter()
            .position(|n| n.name() == name)
            .ok_or_else(|| no_table(name))
    };
    let (child_name, from_cols) = table_columns(from)
        .ok_or_else(|| Error::config(format!("relation from {from:?}: write table.column")))?;
    let child = find(&child_name)?;
    let (parent, to_cols) = match table_columns(to) {
        Some((t, cols)) if nodes.iter().any(|n| n.name() == t) => (find(&t)?, cols),
        _ => {
            let parent = find(to)?;
            (parent, nodes[parent].plan.primary_key.clone())
        }
    };
    if from_cols.len() != to_cols.len() || to_cols.is_empty() {
        return Err(Error::config(format!(
            "relation {from} → {to}: the two sides need the same number of columns"
        )));
    }
    for (node, cols) in [(child, &from_cols), (parent, &to_cols)] {
        for c in cols {
            if !nodes[node].plan.columns.iter().any(|pc| &pc.name == c) {
                return Err(Error::config(format!(
                    "relation {from} → {to}: {} has no column {}",
                    quote_ident(nodes[node].name()),
                    quote_ident(c)
                )));
            }
        }
    }
    Ok(Edge {
        child,
        from: from_cols,
        parent,
        to: to_cols,
        declared: false,
        stopped: false,
    })
}
