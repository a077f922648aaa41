//! The task graph of a pipeline (petgraph): dependency checks, cycle detection with the cycle's
//! tasks named in order, topological order, and text/dot rendering for `windsock graph`.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use petgraph::Direction;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Bfs, Reversed};

use crate::diag::{Diagnostic, Diagnostics, closest};
use crate::spec::Pipeline;

/// Tasks as nodes, an edge from each upstream to its downstream.
#[derive(Debug, Clone)]
pub(crate) struct TaskGraph {
    graph: DiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
    order: Vec<String>,
    /// Direct upstreams and downstreams of each task, in `order`: the executor asks for them on
    /// every state change, so they are computed once.
    upstream: HashMap<String, Vec<String>>,
    downstream: HashMap<String, Vec<String>>,
}

impl TaskGraph {
    /// Builds the graph, reporting unknown upstreams and cycles.
    pub(crate) fn build(p: &Pipeline) -> Result<TaskGraph, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for name in p.tasks.keys() {
            index.insert(name.clone(), graph.add_node(name.clone()));
        }
        for task in p.tasks.values() {
            let deps_node = task.node.get("depends_on");
            for (i, dep) in task.depends_on.iter().enumerate() {
                let pos = deps_node
                    .and_then(|n| n.items().get(i))
                    .map(|n| n.pos)
                    .unwrap_or(task.pos);
                match index.get(dep) {
                    Some(&from) => {
                        graph.update_edge(from, index[&task.name], ());
                    }
                    None if p.broken_tasks.contains(dep) => {}
                    None => {
                        let mut d = Diagnostic::new(
                            &p.file,
                            pos,
                            format!(
                                "task `{}` depends on `{dep}`, which is not a task of this DAG",
                                task.name
                            ),
                        );
                        if let Some(c) = closest(dep, p.tasks.keys().map(String::as_str)) {
                            d = d.with_hint(format!("did you mean `{c}`?"));
                        }
                        diags.push(d);
                    }
                }
            }
        }
        for scc in tarjan_scc(&graph) {
            let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let cycle = cycle_in(&graph, &scc);
            let names: Vec<&str> = cycle.iter().map(|&i| graph[i].as_str()).collect();
            let first = names[0];
            let closing = *names.last().unwrap_or(&first);
            // Point at the `depends_on` entry of the first task that closes the loop.
            let task = &p.tasks[first];
            let pos = task
                .node
                .get("depends_on")
                .and_then(|deps| deps.items().iter().find(|n| n.as_str() == Some(closing)))
                .map(|n| n.pos)
                .unwrap_or(task.pos);
            let mut shown: Vec<&str> = names.clone();
            shown.push(first);
            diags.push(
                Diagnostic::new(
                    &p.file,
                    pos,
                    format!("dependency cycle: {}", shown.join(" → ")),
                )
                .with_hint("each arrow reads \"runs before\"; remove one `depends_on` entry to break the cycle"),
            );
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        let sorted = toposort(&graph, None).map_err(|_| Diagnostics::default())?;
        // Stable order: a topological order that keeps file order among independent tasks.
        let position: HashMap<NodeIndex, usize> =
            sorted.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut order: Vec<String> = Vec::with_capacity(sorted.len());
        let mut done = BTreeSet::new();
        while order.len() < sorted.len() {
            let next = p
                .tasks
                .keys()
                .map(|n| index[n])
                .filter(|i| !done.contains(&position[i]))
                .find(|i| {
                    graph
                        .neighbors_directed(*i, Direction::Incoming)
                        .all(|up| done.contains(&position[&up]))
                });
            match next {
                Some(i) => {
                    done.insert(position[&i]);
                    order.push(graph[i].clone());
                }
                None => break,
            }
        }
        let rank: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let neighbors = |name: &str, dir: Direction| {
            let mut v: Vec<String> = graph
                .neighbors_directed(index[name], dir)
                .map(|n| graph[n].clone())
                .collect();
            v.sort_by_key(|n| rank.get(n.as_str()).copied());
            v
        };
        let upstream = order
            .iter()
            .map(|n| (n.clone(), neighbors(n, Direction::Incoming)))
            .collect();
        let downstream = order
            .iter()
            .map(|n| (n.clone(), neighbors(n, Direction::Outgoing)))
            .collect();
        Ok(TaskGraph {
            graph,
            index,
            order,
            upstream,
            downstream,
        })
    }

    /// Tasks in an order where each comes after all its upstreams (file order among equals).
    pub(crate) fn order(&self) -> &[String] {
        &self.order
    }

    /// The tasks `task` depends on directly, in order.
    pub(crate) fn upstream(&self, task: &str) -> &[String] {
        self.upstream.get(task).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The tasks that depend directly on `task`, in order.
    pub(crate) fn downstream(&self, task: &str) -> &[String] {
        self.downstream.get(task).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every task that runs before `task`, directly or not.
    pub(crate) fn ancestors(&self, task: &str) -> BTreeSet<String> {
        let Some(&start) = self.index.get(task) else {
            return BTreeSet::new();
        };
        let reversed = Reversed(&self.graph);
        let mut bfs = Bfs::new(reversed, start);
        let mut out = BTreeSet::new();
        while let Some(n) = bfs.next(reversed) {
            if n != start {
                out.insert(self.graph[n].clone());
            }
        }
        out
    }

    /// Every task that runs after `task`, directly or not.
    pub(crate) fn descendants(&self, task: &str) -> BTreeSet<String> {
        let Some(&start) = self.index.get(task) else {
            return BTreeSet::new();
        };
        let mut bfs = Bfs::new(&self.graph, start);
        let mut out = BTreeSet::new();
        while let Some(n) = bfs.next(&self.graph) {
            if n != start {
                out.insert(self.graph[n].clone());
            }
        }
        out
    }

    /// One line per task in dependency order, with its operator and upstreams (and its
    /// description below it, when it has one).
    pub(crate) fn to_text(&self, p: &Pipeline) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} ({} tasks)", p.dag, self.order.len());
        if let Some(d) = &p.description {
            let _ = writeln!(out, "     {d}");
        }
        let width = self.order.iter().map(String::len).max().unwrap_or(0);
        for (i, name) in self.order.iter().enumerate() {
            let op = p
                .tasks
                .get(name)
                .map(|t| t.operator.as_str())
                .unwrap_or("?");
            let ups = self.upstream(name);
            let after = if ups.is_empty() {
                String::new()
            } else {
                format!("  after {}", ups.join(", "))
            };
            let _ = writeln!(out, "{:>3}. {name:<width$}  [{op}]{after}", i + 1);
            if let Some(d) = p.tasks.get(name).and_then(|t| t.description.as_deref()) {
                let _ = writeln!(out, "     {:width$}  {d}", "");
            }
        }
        out
    }

    /// Graphviz source.
    pub(crate) fn to_dot(&self, p: &Pipeline) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote(&p.dag));
        let _ = writeln!(out, "  rankdir=LR;");
        let _ = writeln!(
            out,
            "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
        );
        for name in &self.order {
            let op = p
                .tasks
                .get(name)
                .map(|t| t.operator.as_str())
                .unwrap_or("?");
            let tooltip = p
                .tasks
                .get(name)
                .and_then(|t| t.description.as_deref())
                .map(|d| format!(", tooltip={}", quote(d)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} [label={}{tooltip}];",
                quote(name),
                quote(&format!("{name}\n{op}"))
            );
        }
        for name in &self.order {
            for down in self.downstream(name) {
                let _ = writeln!(out, "  {} -> {};", quote(name), quote(down));
            }
        }
        out.push_str("}\n");
        out
    }
}

fn quote(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// A cycle through the strongly connected component, starting at its earliest node.
fn cycle_in(graph: &DiGraph<String, ()>, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let start = *members.iter().next().unwrap_or(&scc[0]);
    // Depth-first search for a path back to `start` inside the component.
    let mut stack = vec![(start, vec![start])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        let mut next: Vec<NodeIndex> = graph
            .neighbors_directed(node, Direction::Outgoing)
            .filter(|n| members.contains(n))
            .collect();
        next.sort();
        for n in next.into_iter().rev() {
            if n == start {
                return path;
            }
            if seen.insert(n) {
                let mut p = path.clone();
                p.push(n);
                stack.push((n, p));
            }
        }
    }
    vec![start]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::load_str;
    use std::path::Path;

    fn graph(src: &str) -> Result<TaskGraph, Diagnostics> {
        let (p, d) = load_str(Path::new("g.yaml"), src);
        assert!(d.is_empty(), "{d}");
        TaskGraph::build(&p.unwrap())
    }

    #[test]
    fn orders_tasks_after_their_upstreams() {
        let g = graph("dag: d\ntasks:\n  c: {operator: noop, depends_on: [b]}\n  a: {operator: noop}\n  b: {operator: noop, depends_on: [a]}\n  x: {operator: noop}\n").unwrap();
        assert_eq!(g.order(), ["a", "b", "c", "x"]);
        assert_eq!(g.ancestors("c").into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            g.descendants("a").into_iter().collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn names_the_cycle_in_order() {
        let e = graph("dag: d\ntasks:\n  a: {operator: noop, depends_on: [c]}\n  b: {operator: noop, depends_on: [a]}\n  c: {operator: noop, depends_on: [b]}\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("g.yaml:3:36: dependency cycle: a → b → c → a"),
            "{text}"
        );
    }

    #[test]
    fn unknown_upstream_suggests_a_name() {
        let e = graph("dag: d\ntasks:\n  prepare: {operator: noop}\n  load: {operator: noop, depends_on: [prepre]}\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("g.yaml:4:39: task `load` depends on `prepre`"),
            "{text}"
        );
        assert!(text.contains("did you mean `prepare`?"), "{text}");
    }
}
