//! `prun graph`: the pipeline graph as Graphviz dot or a Mermaid flowchart.

use std::fmt::Write;

use petgraph::visit::EdgeRef;

use super::{Edge, Graph, Node};
use crate::model::Model;
use crate::plan::show::condition_name;

fn id(n: &Node) -> String {
    match n {
        Node::Stage(i) => format!("s{i}"),
        Node::Queue(i) => format!("q{i}"),
        Node::Event(i) => format!("e{i}"),
        Node::Semaphore(i) => format!("m{i}"),
    }
}

fn label(m: &Model, n: &Node) -> String {
    match n {
        Node::Stage(i) => {
            let s = &m.stages[*i];
            match &s.instances {
                crate::plan::Instances::Replicas { count, .. } if *count > 1 => {
                    format!("{} ×{count}", s.name)
                }
                crate::plan::Instances::Foreach { .. } => format!("{} (foreach)", s.name),
                _ => s.name.clone(),
            }
        }
        Node::Queue(i) => m.queues[*i].name.clone(),
        Node::Event(i) => m.events[*i].name.clone(),
        Node::Semaphore(i) => format!("{} ({})", m.semaphores[*i].name, m.semaphores[*i].count),
    }
}

fn edge_label(e: &Edge) -> String {
    match e {
        Edge::Writes(p) | Edge::Reads(p) => p.clone(),
        Edge::After(c) => format!("after: {}", condition_name(*c)),
        Edge::Sets(t) => format!("sets on {t}"),
        Edge::Waits => "waits".into(),
        Edge::Uses => "holds".into(),
    }
}

pub fn dot(m: &Model) -> String {
    let g = Graph::build(m);
    let mut o = String::new();
    let _ = writeln!(o, "digraph {:?} {{", m.name);
    let _ = writeln!(o, "  rankdir=LR;");
    for idx in g.g.node_indices() {
        let n = &g.g[idx];
        let shape = match n {
            Node::Stage(_) => "box",
            Node::Queue(_) => "cylinder",
            Node::Event(_) => "diamond",
            Node::Semaphore(_) => "octagon",
        };
        let _ = writeln!(o, "  {} [label={:?}, shape={shape}];", id(n), label(m, n));
    }
    for e in g.g.edge_references() {
        let style = match e.weight() {
            Edge::Writes(_) | Edge::Reads(_) => "solid",
            Edge::Uses => "dotted",
            _ => "dashed",
        };
        let _ = writeln!(
            o,
            "  {} -> {} [label={:?}, style={style}];",
            id(&g.g[e.source()]),
            id(&g.g[e.target()]),
            edge_label(e.weight())
        );
    }
    o.push_str("}\n");
    o
}

pub fn mermaid(m: &Model) -> String {
    let g = Graph::build(m);
    let mut o = String::from("flowchart LR\n");
    for idx in g.g.node_indices() {
        let n = &g.g[idx];
        let text = label(m, n).replace('"', "'");
        let shape = match n {
            Node::Stage(_) => format!("[\"{text}\"]"),
            Node::Queue(_) => format!("[(\"{text}\")]"),
            Node::Event(_) => format!("{{\"{text}\"}}"),
            Node::Semaphore(_) => format!("{{{{\"{text}\"}}}}"),
        };
        let _ = writeln!(o, "  {}{shape}", id(n));
    }
    for e in g.g.edge_references() {
        let arrow = match e.weight() {
            Edge::Writes(_) | Edge::Reads(_) => "-->",
            Edge::Uses => "-.-",
            _ => "-.->",
        };
        let _ = writeln!(
            o,
            "  {} {arrow}|{}| {}",
            id(&g.g[e.source()]),
            edge_label(e.weight()).replace('|', "/"),
            id(&g.g[e.target()])
        );
    }
    o
}
