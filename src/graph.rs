//! The step DAG: edges from `needs` (or list order), cycle detection with the
//! cycle's path, a deterministic topological order (ties broken by file
//! order), waves, ancestry and the longest path.
//!
//! Steps are addressed by their index in the file everywhere after
//! validation; ids are for people.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

/// A validated, acyclic step graph.
#[derive(Debug, Clone)]
pub struct StepGraph {
    graph: DiGraph<usize, ()>,
    order: Vec<usize>,
    wave: Vec<usize>,
}

impl StepGraph {
    /// Builds the graph; `needs[i]` lists the steps step `i` waits for.
    /// On a cycle, returns one cycle as a path of step indices, first == last.
    pub fn build(needs: &[Vec<usize>]) -> Result<StepGraph, Vec<usize>> {
        let n = needs.len();
        let mut graph = DiGraph::with_capacity(n, n);
        for i in 0..n {
            graph.add_node(i);
        }
        for (i, deps) in needs.iter().enumerate() {
            for &d in deps {
                graph.update_edge(NodeIndex::new(d), NodeIndex::new(i), ());
            }
        }
        // Kahn's algorithm with a min-heap: among ready steps, file order wins.
        let mut indegree: Vec<usize> = (0..n)
            .map(|i| {
                graph
                    .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        let mut wave = vec![0usize; n];
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for c in graph.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
                let c = c.index();
                wave[c] = wave[c].max(wave[i] + 1);
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.push(Reverse(c));
                }
            }
        }
        if order.len() < n {
            return Err(find_cycle(needs, &indegree));
        }
        Ok(StepGraph { graph, order, wave })
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Topological order, ties broken by file order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    pub fn parents(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .map(NodeIndex::index)
    }

    pub fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(i), Direction::Outgoing)
            .map(NodeIndex::index)
    }

    /// The wave of each step: 0 for roots, else one more than its latest parent.
    pub fn wave(&self, i: usize) -> usize {
        self.wave[i]
    }

    /// Steps grouped by wave, each wave in file order.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for i in 0..self.len() {
            let w = self.wave[i];
            if waves.len() <= w {
                waves.resize_with(w + 1, Vec::new);
            }
            waves[w].push(i);
        }
        waves
    }

    /// Every step's ancestors as bit sets, computed in one topological sweep.
    pub fn ancestors(&self) -> Ancestors {
        let n = self.len();
        let words = n.div_ceil(64);
        let mut bits = vec![0u64; n * words];
        for &i in &self.order {
            let parents: Vec<usize> = self.parents(i).collect();
            for p in parents {
                let (src, dst) = (p * words, i * words);
                for w in 0..words {
                    bits[dst + w] |= bits[src + w];
                }
                bits[dst + p / 64] |= 1 << (p % 64);
            }
        }
        Ancestors { words, bits }
    }

    /// The heaviest path by per-step weight; `None` weights are unbounded and
    /// make the whole path unbounded.
    pub fn longest_path(
        &self,
        weight: impl Fn(usize) -> Option<Duration>,
    ) -> (Option<Duration>, Vec<usize>) {
        // Unbounded (None) sorts above every bounded duration.
        let key = |d: Option<Duration>| d.map_or((1, Duration::ZERO), |d| (0, d));
        let n = self.len();
        let mut best: Vec<Option<Duration>> = vec![Some(Duration::ZERO); n];
        let mut via: Vec<Option<usize>> = vec![None; n];
        for &i in &self.order {
            let mut start = Some(Duration::ZERO);
            let mut from = None;
            for p in self.parents(i) {
                if from.is_none() || key(best[p]) > key(start) {
                    start = best[p];
                    from = Some(p);
                }
            }
            best[i] = match (start, weight(i)) {
                (Some(a), Some(b)) => Some(a.saturating_add(b)),
                _ => None,
            };
            via[i] = from;
        }
        let end = (0..n).max_by(|&a, &b| key(best[a]).cmp(&key(best[b])).then(b.cmp(&a)));
        let Some(end) = end else {
            return (Some(Duration::ZERO), Vec::new());
        };
        let mut path = vec![end];
        let mut cur = end;
        while let Some(p) = via[cur] {
            path.push(p);
            cur = p;
        }
        path.reverse();
        (best[end], path)
    }
}

/// Ancestor sets of every step.
pub struct Ancestors {
    words: usize,
    bits: Vec<u64>,
}

impl Ancestors {
    /// Whether `a` runs strictly before `b` on every path (is its ancestor).
    pub fn is_ancestor(&self, a: usize, b: usize) -> bool {
        self.bits
            .get(b * self.words + a / 64)
            .is_some_and(|w| w & (1 << (a % 64)) != 0)
    }
}

/// One cycle among the steps left with unmet dependencies after Kahn's sweep.
fn find_cycle(needs: &[Vec<usize>], indegree: &[usize]) -> Vec<usize> {
    let stuck: Vec<bool> = indegree.iter().map(|&d| d > 0).collect();
    // Walk backwards along `needs` inside the stuck set until a step repeats;
    // every stuck step has a stuck dependency, so the walk must close a loop.
    let Some(start) = stuck.iter().position(|&s| s) else {
        return Vec::new();
    };
    let mut seen_at = vec![usize::MAX; needs.len()];
    let mut path = Vec::new();
    let mut cur = start;
    while seen_at[cur] == usize::MAX {
        seen_at[cur] = path.len();
        path.push(cur);
        match needs[cur].iter().copied().find(|&d| stuck[d]) {
            Some(next) => cur = next,
            None => return path,
        }
    }
    let mut cycle: Vec<usize> = path[seen_at[cur]..].to_vec();
    // Walking `needs` goes against execution order; print it the way it runs.
    cycle.reverse();
    let first = cycle[0];
    cycle.push(first);
    // Start the printed cycle at its first step in file order.
    let min_pos = cycle[..cycle.len() - 1]
        .iter()
        .enumerate()
        .min_by_key(|(_, &s)| s)
        .map_or(0, |(p, _)| p);
    let body = &cycle[..cycle.len() - 1];
    let mut rotated: Vec<usize> = body[min_pos..]
        .iter()
        .chain(&body[..min_pos])
        .copied()
        .collect();
    rotated.push(rotated[0]);
    rotated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diamond_has_three_waves() {
        // a -> b, a -> c, b,c -> d
        let g = StepGraph::build(&[vec![], vec![0], vec![0], vec![1, 2]]).unwrap();
        assert_eq!(g.waves(), vec![vec![0], vec![1, 2], vec![3]]);
        assert_eq!(g.order(), &[0, 1, 2, 3]);
        let anc = g.ancestors();
        assert!(anc.is_ancestor(0, 3));
        assert!(anc.is_ancestor(1, 3));
        assert!(!anc.is_ancestor(1, 2));
        assert!(!anc.is_ancestor(3, 0));
    }

    #[test]
    fn ties_break_by_file_order() {
        let g = StepGraph::build(&[vec![2], vec![], vec![]]).unwrap();
        assert_eq!(g.order(), &[1, 2, 0]);
    }

    #[test]
    fn cycle_path_is_reported_in_run_order() {
        // a needs c, b needs a, c needs b: a -> b -> c -> a
        let err = StepGraph::build(&[vec![2], vec![0], vec![1], vec![]]).unwrap_err();
        assert_eq!(err, vec![0, 1, 2, 0]);
    }

    #[test]
    fn self_cycle() {
        let err = StepGraph::build(&[vec![], vec![1]]).unwrap_err();
        assert_eq!(err, vec![1, 1]);
    }

    #[test]
    fn longest_path_takes_heaviest_branch() {
        let g = StepGraph::build(&[vec![], vec![0], vec![0], vec![1, 2]]).unwrap();
        let w = [1u64, 5, 2, 1];
        let (d, path) = g.longest_path(|i| Some(Duration::from_secs(w[i])));
        assert_eq!(d, Some(Duration::from_secs(7)));
        assert_eq!(path, vec![0, 1, 3]);
    }

    #[test]
    fn unbounded_step_makes_path_unbounded() {
        let g = StepGraph::build(&[vec![], vec![0]]).unwrap();
        let (d, path) = g.longest_path(|i| {
            if i == 1 {
                None
            } else {
                Some(Duration::from_secs(1))
            }
        });
        assert_eq!(d, None);
        assert_eq!(path, vec![0, 1]);
    }

    #[test]
    fn ancestors_on_long_chain() {
        let needs: Vec<Vec<usize>> = (0..200)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let g = StepGraph::build(&needs).unwrap();
        let anc = g.ancestors();
        assert!(anc.is_ancestor(0, 199));
        assert!(anc.is_ancestor(70, 130));
        assert!(!anc.is_ancestor(130, 70));
    }
}
