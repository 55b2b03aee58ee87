//! The dependency graph of one region's resources (petgraph): an edge runs from
//! a resource to each resource that refers to it. Order, cycles, DOT and Mermaid.

use std::collections::HashMap;
use std::fmt::Write;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::model::{Address, Resource};

pub struct Graph {
    pub graph: DiGraph<Address, ()>,
    pub index: HashMap<Address, NodeIndex>,
}

impl Graph {
    pub fn build(resources: &[Resource]) -> Graph {
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        for r in resources {
            index.insert(r.address.clone(), graph.add_node(r.address.clone()));
        }
        for r in resources {
            for dep in r.dependencies() {
                if let Some(&from) = index.get(&dep) {
                    graph.update_edge(from, index[&r.address], ());
                }
            }
        }
        Graph { graph, index }
    }

    /// Each cycle as the list of resources on it (in graph order, first repeated at the end).
    pub fn cycles(&self) -> Vec<Vec<Address>> {
        tarjan_scc(&self.graph)
            .into_iter()
            .filter(|scc| scc.len() > 1 || self.graph.contains_edge(scc[0], scc[0]))
            .map(|scc| {
                let mut names: Vec<Address> = scc.iter().map(|n| self.graph[*n].clone()).collect();
                names.sort();
                names.push(names[0].clone());
                names
            })
            .collect()
    }

    /// Dependencies first; `None` when there is a cycle.
    pub fn order(&self) -> Option<Vec<Address>> {
        toposort(&self.graph, None)
            .ok()
            .map(|o| o.into_iter().map(|n| self.graph[n].clone()).collect())
    }

    pub fn dot(&self, region: &str, out: &mut String) {
        let _ = writeln!(
            out,
            "  subgraph \"cluster_{region}\" {{\n    label = \"{region}\";"
        );
        for n in self.graph.node_indices() {
            let _ = writeln!(
                out,
                "    \"{region}/{}\" [label=\"{}\"];",
                self.graph[n], self.graph[n]
            );
        }
        for e in self.graph.edge_indices() {
            let (a, b) = self.graph.edge_endpoints(e).unwrap();
            // Arrows read "needs": dependent -> dependency.
            let _ = writeln!(
                out,
                "    \"{region}/{}\" -> \"{region}/{}\";",
                self.graph[b], self.graph[a]
            );
        }
        out.push_str("  }\n");
    }

    pub fn mermaid(&self, region: &str, out: &mut String) {
        let id = |a: &Address| {
            format!(
                "{}_{}",
                region.replace('-', "_"),
                a.to_string().replace(['.', '[', ']', '-'], "_")
            )
        };
        let _ = writeln!(out, "  subgraph {}[\"{region}\"]", region.replace('-', "_"));
        for n in self.graph.node_indices() {
            let _ = writeln!(out, "    {}[\"{}\"]", id(&self.graph[n]), self.graph[n]);
        }
        for e in self.graph.edge_indices() {
            let (a, b) = self.graph.edge_endpoints(e).unwrap();
            let _ = writeln!(out, "    {} --> {}", id(&self.graph[b]), id(&self.graph[a]));
        }
        out.push_str("  end\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;
    use std::collections::BTreeMap;

    fn r(address: &str, deps: &[&str]) -> Resource {
        let mut attrs = BTreeMap::new();
        for (i, d) in deps.iter().enumerate() {
            attrs.insert(format!("ref{i}"), Value::Ref(Address::parse(d).unwrap()));
        }
        Resource {
            address: Address::parse(address).unwrap(),
            region: "eu-west-1".into(),
            attrs,
            tags: BTreeMap::new(),
            span: 0..0,
            field_spans: BTreeMap::new(),
            depends_on: vec![],
            exceptions: BTreeMap::new(),
        }
    }

    #[test]
    fn order_puts_dependencies_first() {
        let g = Graph::build(&[
            r("subnet.a", &["vpc.main"]),
            r("nat_gateway.a", &["subnet.a", "eip.a"]),
            r("vpc.main", &[]),
            r("eip.a", &[]),
        ]);
        let order = g.order().unwrap();
        let pos = |a: &str| order.iter().position(|x| x.to_string() == a).unwrap();
        assert!(pos("vpc.main") < pos("subnet.a"));
        assert!(pos("subnet.a") < pos("nat_gateway.a"));
        assert!(pos("eip.a") < pos("nat_gateway.a"));
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn cycles_name_every_member() {
        let g = Graph::build(&[
            r("vpc.a", &["vpc.c"]),
            r("vpc.b", &["vpc.a"]),
            r("vpc.c", &["vpc.b"]),
            r("vpc.d", &[]),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        let names: Vec<String> = cycles[0].iter().map(|a| a.to_string()).collect();
        assert_eq!(names, ["vpc.a", "vpc.b", "vpc.c", "vpc.a"]);
        assert!(g.order().is_none());
    }
}
