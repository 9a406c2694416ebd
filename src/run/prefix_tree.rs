//! Which prompt prefixes are worth computing once: every prefix that two or more prompts share
//! and that extends the next shorter shared prefix by at least `min_tokens` tokens. Sorting the
//! prompts puts those that share a prefix next to each other, so the shared prefixes are the
//! longest common prefixes of neighbours (an LCP array), and they nest into a tree.

use super::scheduler::{deepest_prefix, PrefixNode};
use crate::engine::Token;

/// The shared prefixes of `prompts` (parents first, with the users of each among `pending`,
/// indices into `prompts`) and the order to run `pending` in: sorted by prompt, so questions
/// sharing a prefix run one after another and each prefix is needed for a short stretch only.
/// Sequences are not assigned here.
pub fn build(
    prompts: &[&[Token]],
    pending: &[usize],
    min_tokens: usize,
) -> (Vec<PrefixNode>, Vec<usize>) {
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by(|&a, &b| prompts[a].cmp(prompts[b]));
    let mut lengths: Vec<(usize, usize)> = order
        .windows(2)
        .map(|w| (w[0], common(prompts[w[0]], prompts[w[1]])))
        .filter(|&(_, length)| length >= min_tokens)
        .collect();
    // Candidate prefixes, sorted so that a prefix comes before its extensions.
    lengths.sort_by(|a, b| prompts[a.0][..a.1].cmp(&prompts[b.0][..b.1]));
    lengths.dedup_by(|b, a| prompts[a.0][..a.1] == prompts[b.0][..b.1]);
    let mut nodes: Vec<PrefixNode> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for (prompt, length) in lengths {
        let tokens = &prompts[prompt][..length];
        while let Some(&top) = stack.last() {
            if tokens.starts_with(&nodes[top].tokens) {
                break;
            }
            stack.pop();
        }
        let parent = stack.last().copied();
        // Too short an extension is not worth a sequence of its own: its prompts use the parent.
        if parent.is_some_and(|p| length < nodes[p].tokens.len() + min_tokens) {
            continue;
        }
        nodes.push(PrefixNode {
            tokens: tokens.to_vec(),
            parent,
            users: 0,
        });
        stack.push(nodes.len() - 1);
    }
    count_users(&mut nodes, prompts, pending);
    let mut runs: Vec<usize> = pending.to_vec();
    if nodes.len() > 1 {
        let rank: Vec<usize> = {
            let mut rank = vec![0; prompts.len()];
            for (position, &prompt) in order.iter().enumerate() {
                rank[prompt] = position;
            }
            rank
        };
        runs.sort_by_key(|&p| rank[p]);
    }
    (nodes, runs)
}

/// A prefix's users: pending prompts whose deepest shared prefix it is, and its children.
fn count_users(nodes: &mut [PrefixNode], prompts: &[&[Token]], pending: &[usize]) {
    for &p in pending {
        if let Some(node) = deepest_prefix(nodes, prompts[p]) {
            nodes[node].users += 1;
        }
    }
    for index in 0..nodes.len() {
        if let Some(parent) = nodes[index].parent {
            nodes[parent].users += 1;
        }
    }
}

pub(super) fn common(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::scripted::tokens;

    fn ids_of(node: &PrefixNode) -> Vec<i32> {
        node.tokens.iter().map(|t| t.id()).collect()
    }

    #[test]
    fn passages_shared_by_several_questions_nest_under_the_system_prompt() {
        // System prompt 1..4, passages 10.. and 20.., questions after them.
        let prompts: Vec<Vec<Token>> = [
            &[1, 2, 3, 4, 20, 21, 22, 23, 90][..],
            &[1, 2, 3, 4, 10, 11, 12, 13, 50],
            &[1, 2, 3, 4, 20, 21, 22, 23, 91, 92],
            &[1, 2, 3, 4, 10, 11, 12, 13, 51],
            &[1, 2, 3, 4, 30, 31],
            &[1, 2, 3, 4, 10, 11, 12, 13, 52],
        ]
        .iter()
        .map(|p| tokens(p))
        .collect();
        let refs: Vec<&[Token]> = prompts.iter().map(Vec::as_slice).collect();
        let (nodes, order) = build(&refs, &[0, 1, 2, 3, 4, 5], 4);
        let shape: Vec<(Vec<i32>, Option<usize>, usize)> = nodes
            .iter()
            .map(|n| (ids_of(n), n.parent, n.users))
            .collect();
        assert_eq!(
            shape,
            vec![
                (vec![1, 2, 3, 4], None, 3), // prompt 4 and two children
                (vec![1, 2, 3, 4, 10, 11, 12, 13], Some(0), 3), // prompts 1, 3, 5
                (vec![1, 2, 3, 4, 20, 21, 22, 23], Some(0), 2), // prompts 0, 2
            ]
        );
        // Questions of one passage run one after another.
        assert_eq!(order, vec![1, 3, 5, 0, 2, 4]);
    }

    #[test]
    fn short_extensions_and_unshared_prompts_get_no_prefix_of_their_own() {
        let prompts: Vec<Vec<Token>> = [&[1, 2, 3, 4, 5, 6][..], &[1, 2, 3, 4, 5, 7], &[9, 9, 9]]
            .iter()
            .map(|p| tokens(p))
            .collect();
        let refs: Vec<&[Token]> = prompts.iter().map(Vec::as_slice).collect();
        let (nodes, order) = build(&refs, &[0, 1, 2], 4);
        assert_eq!(nodes.len(), 1);
        assert_eq!(ids_of(&nodes[0]), vec![1, 2, 3, 4, 5]);
        assert_eq!(nodes[0].users, 2);
        assert_eq!(order, vec![0, 1, 2], "one prefix: the file's order stays");
        let (nodes, _) = build(&refs, &[0, 1, 2], 6);
        assert!(nodes.is_empty(), "5 shared tokens are fewer than 6");
        // Users count only the questions still pending.
        let (nodes, _) = build(&refs, &[1], 4);
        assert_eq!(nodes[0].users, 1);
    }
}
