//! The dependency graph between services, derived once from validated manifests.
//!
//! Two relations matter:
//! - *ordering* (`requires`, `requisite`, `after`, and the reverse of `before`): a service
//!   starts only once everything ordered before it that is meant to run is ready, and stops
//!   only once everything ordered after it that is stopping has stopped;
//! - *requirement* (`requires`): starting a service pulls in what it requires, and stopping
//!   or restarting a service does the same to what requires it (systemd's `Requires=`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{ServiceManifest, ServiceName};

#[derive(Debug, Clone, Default)]
pub struct ServiceGraph {
    /// service -> services that must be up before it starts.
    ordered_after: BTreeMap<ServiceName, BTreeSet<ServiceName>>,
    /// service -> services that wait for it.
    ordered_before: BTreeMap<ServiceName, BTreeSet<ServiceName>>,
    /// service -> services it requires (pulls in).
    requires: BTreeMap<ServiceName, BTreeSet<ServiceName>>,
    /// service -> services that require it.
    required_by: BTreeMap<ServiceName, BTreeSet<ServiceName>>,
    /// A start order consistent with the ordering relation.
    order: Vec<ServiceName>,
}

impl ServiceGraph {
    /// Builds the graph; on a cycle returns the services that are part of one.
    pub(crate) fn build(manifests: &BTreeMap<ServiceName, ServiceManifest>) -> Result<Self, Vec<ServiceName>> {
        let mut graph = ServiceGraph::default();
        for name in manifests.keys() {
            graph.ordered_after.entry(name.clone()).or_default();
            graph.ordered_before.entry(name.clone()).or_default();
            graph.requires.entry(name.clone()).or_default();
            graph.required_by.entry(name.clone()).or_default();
        }
        let mut add_order = |first: &ServiceName, then: &ServiceName| {
            if first != then && manifests.contains_key(first) && manifests.contains_key(then) {
                graph.ordered_after.get_mut(then).map(|s| s.insert(first.clone()));
                graph.ordered_before.get_mut(first).map(|s| s.insert(then.clone()));
            }
        };
        for (name, manifest) in manifests {
            let service = &manifest.service;
            // A dependent of a failure-group member comes up after it and goes down before it.
            for dep in
                service.requires.iter().chain(&service.requisite).chain(&service.after).chain(&service.dependent_of)
            {
                add_order(dep, name);
            }
            for later in &service.before {
                add_order(name, later);
            }
        }
        for (name, manifest) in manifests {
            for dep in &manifest.service.requires {
                if manifests.contains_key(dep) && dep != name {
                    graph.requires.get_mut(name).map(|s| s.insert(dep.clone()));
                    graph.required_by.get_mut(dep).map(|s| s.insert(name.clone()));
                }
            }
        }
        graph.order = graph.topological_order()?;
        Ok(graph)
    }

    /// Kahn's algorithm; leftovers are on (or behind) a cycle.
    fn topological_order(&self) -> Result<Vec<ServiceName>, Vec<ServiceName>> {
        let mut indegree: BTreeMap<&ServiceName, usize> =
            self.ordered_after.iter().map(|(name, deps)| (name, deps.len())).collect();
        let mut ready: VecDeque<&ServiceName> = indegree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| *n).collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(name) = ready.pop_front() {
            order.push(name.clone());
            for later in &self.ordered_before[name] {
                let d = indegree.get_mut(later).expect("every node has an indegree");
                *d -= 1;
                if *d == 0 {
                    ready.push_back(later);
                }
            }
        }
        if order.len() == indegree.len() {
            return Ok(order);
        }
        let placed: BTreeSet<&ServiceName> = order.iter().collect();
        Err(indegree.keys().filter(|n| !placed.contains(*n)).map(|n| (*n).clone()).collect())
    }

    /// Services that must be up (if meant to run) before `name` starts.
    pub fn ordered_after(&self, name: &ServiceName) -> impl Iterator<Item = &ServiceName> {
        self.ordered_after.get(name).into_iter().flatten()
    }

    /// Services that wait for `name` when starting, and stop before it.
    pub fn ordered_before(&self, name: &ServiceName) -> impl Iterator<Item = &ServiceName> {
        self.ordered_before.get(name).into_iter().flatten()
    }

    pub fn requires(&self, name: &ServiceName) -> impl Iterator<Item = &ServiceName> {
        self.requires.get(name).into_iter().flatten()
    }

    /// `name` plus everything it requires, transitively.
    pub fn requirement_closure(&self, name: &ServiceName) -> BTreeSet<ServiceName> {
        Self::closure(name, &self.requires)
    }

    /// `name` plus everything that requires it, transitively.
    pub fn dependent_closure(&self, name: &ServiceName) -> BTreeSet<ServiceName> {
        Self::closure(name, &self.required_by)
    }

    fn closure(start: &ServiceName, edges: &BTreeMap<ServiceName, BTreeSet<ServiceName>>) -> BTreeSet<ServiceName> {
        let mut seen = BTreeSet::from([start.clone()]);
        let mut queue = VecDeque::from([start.clone()]);
        while let Some(next) = queue.pop_front() {
            for other in edges.get(&next).into_iter().flatten() {
                if seen.insert(other.clone()) {
                    queue.push_back(other.clone());
                }
            }
        }
        seen
    }

    /// A start order: every service comes after everything ordered before it.
    pub fn start_order(&self) -> &[ServiceName] {
        &self.order
    }

    /// The critical path of a start among `members`: the chain of the ordering relation with
    /// the most time, where `cost` is each member's own time and `gate` the soonest a member may
    /// start whatever it is ordered after (SONiC's delayed start waits for the ports). Returns
    /// the chain, first service first, its total, and the gate its first service waited for
    /// (zero when none held it).
    pub fn critical_path(
        &self,
        members: &BTreeSet<ServiceName>,
        cost: impl Fn(&ServiceName) -> f64,
        gate: impl Fn(&ServiceName) -> f64,
    ) -> CriticalPath {
        let mut best: BTreeMap<&ServiceName, CriticalPath> = BTreeMap::new();
        for name in self.order.iter().filter(|n| members.contains(*n)) {
            let before = self
                .ordered_after(name)
                .filter_map(|dep| best.get(dep))
                .max_by(|a, b| a.total.total_cmp(&b.total))
                .cloned()
                .unwrap_or_default();
            let gated = gate(name);
            let mut path = if gated > before.total {
                CriticalPath { chain: Vec::new(), total: gated, gate: gated }
            } else {
                before
            };
            path.chain.push(name.clone());
            path.total += cost(name);
            best.insert(name, path);
        }
        best.into_values().max_by(|a, b| a.total.total_cmp(&b.total)).unwrap_or_default()
    }
}

/// See [`ServiceGraph::critical_path`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CriticalPath {
    pub chain: Vec<ServiceName>,
    pub total: f64,
    pub gate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> ServiceGraph {
        let manifests: BTreeMap<ServiceName, ServiceManifest> = edges
            .iter()
            .map(|(name, after)| {
                let text = format!(
                    "[service]\nafter = {after:?}\n[container]\nimage = \"x:latest\"\n[readiness]\nprobe = {{ type = \"process\", name = \"p\" }}\n"
                );
                (ServiceName::new(name).unwrap(), toml::from_str(&text).unwrap())
            })
            .collect();
        ServiceGraph::build(&manifests).unwrap()
    }

    fn names(path: &CriticalPath) -> Vec<&str> {
        path.chain.iter().map(|n| n.as_str()).collect()
    }

    #[test]
    fn critical_path_follows_time_not_length() {
        let g = graph(&[("db", &[]), ("swss", &["db"]), ("syncd", &["swss"]), ("bgp", &["db"]), ("lldp", &["syncd"])]);
        let members = g.start_order().iter().cloned().collect();
        let costs = |n: &ServiceName| match n.as_str() {
            "db" => 10.0,
            "swss" => 20.0,
            "syncd" => 5.0,
            "lldp" => 5.0,
            _ => 100.0,
        };
        let path = g.critical_path(&members, costs, |_| 0.0);
        assert_eq!(names(&path), ["db", "bgp"]);
        assert_eq!((path.total, path.gate), (110.0, 0.0));

        // A gate later than everything lldp is ordered after starts the chain.
        let path = g.critical_path(&members, costs, |n| if n.as_str() == "lldp" { 200.0 } else { 0.0 });
        assert_eq!(names(&path), ["lldp"]);
        assert_eq!((path.total, path.gate), (205.0, 200.0));

        // An earlier gate changes nothing.
        let path = g.critical_path(&members, costs, |n| if n.as_str() == "lldp" { 1.0 } else { 0.0 });
        assert_eq!(names(&path), ["db", "bgp"]);
    }
}
