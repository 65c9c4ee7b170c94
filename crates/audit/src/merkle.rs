//! RFC 9162 §2.1 Merkle hash trees: leaf and node hashes, the tree head
//! (MTH), inclusion and consistency proofs and their verification, and the
//! compact [`Frontier`] (the roots of the complete subtrees on the right edge
//! of a tree) that gives O(log n) appends and roots.
//!
//! This module is pure computation: it does not store anything. Proof
//! generation asks the caller for subtree hashes through a closure, and
//! [`tiles`]/[`combine_tiles`] tell storage which stored complete subtrees
//! answer such a request.

use std::fmt;

use ring::digest;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Finishes a SHA-256 context into a [`Hash`].
fn finish(ctx: digest::Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// MTH({}) = SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    finish(digest::Context::new(&digest::SHA256))
}

/// SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    finish(ctx)
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

/// MTH over leaf hashes (reference implementation, O(n)); empty_root() for none.
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            // `split_point` of a length >= 2 is in 1..len, so the split is in bounds.
            let k = usize::try_from(split_point(leaves.len() as u64)).unwrap_or(leaves.len() / 2);
            let (left, right) = leaves.split_at(k);
            node_hash(&root_from_leaf_hashes(left), &root_from_leaf_hashes(right))
        }
    }
}

/// The largest power of two strictly less than n (n >= 2); 0 when n < 2.
pub fn split_point(n: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Errors of proof generation.
#[derive(Debug, PartialEq, Eq)]
pub enum ProofError<E> {
    /// The index or sizes are outside the tree (or not ordered).
    OutOfRange,
    /// The subtree source failed.
    Source(E),
}

impl<E: fmt::Display> fmt::Display for ProofError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProofError::OutOfRange => f.write_str("proof index or size out of range"),
            ProofError::Source(e) => write!(f, "cannot read subtree hash: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ProofError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProofError::OutOfRange => None,
            ProofError::Source(e) => Some(e),
        }
    }
}

/// The audit path (RFC 9162 §2.1.3.1 PATH(m, D[n])) for leaf `index` in a tree of `size` leaves,
/// using `subtree(start, end)` to get MTH(D[start:end]); every range it asks for is either
/// a complete, aligned subtree (end-start a power of two and start a multiple of it) or a range ending at `size`.
/// Errors (returned as E from the oracle, or `Err(ProofError::OutOfRange)`) when index >= size.
pub fn inclusion_path<E>(
    index: u64,
    size: u64,
    subtree: &mut impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, ProofError<E>> {
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    // Walk down from the root; siblings come out top-down, the proof lists them bottom-up.
    let (mut lo, mut hi) = (0u64, size);
    let mut path = Vec::new();
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            path.push(subtree(lo + k, hi).map_err(ProofError::Source)?);
            hi = lo + k;
        } else {
            path.push(subtree(lo, lo + k).map_err(ProofError::Source)?);
            lo += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof (RFC 9162 §2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true)) between sizes `old` and `new`, 0 < old <= new; empty when old == new.
pub fn consistency_path<E>(
    old: u64,
    new: u64,
    subtree: &mut impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, ProofError<E>> {
    if old == 0 || old > new {
        return Err(ProofError::OutOfRange);
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled; elements come out top-down.
    let (mut lo, mut hi, mut m, mut b) = (0u64, new, old, true);
    let mut path = Vec::new();
    loop {
        let n = hi - lo;
        if m == n {
            if !b {
                path.push(subtree(lo, hi).map_err(ProofError::Source)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            path.push(subtree(lo + k, hi).map_err(ProofError::Source)?);
            hi = lo + k;
        } else {
            path.push(subtree(lo, lo + k).map_err(ProofError::Source)?);
            lo += k;
            m -= k;
            b = false;
        }
    }
    path.reverse();
    Ok(path)
}

/// RFC 9162 §2.1.3.2: true iff `path` proves `leaf` is at `index` in the tree of `size` with `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: true iff `path` proves the tree (old_size, old_root) is a prefix of (new_size, new_root).
/// old_size == new_size: true iff path is empty and roots equal. old_size == 0: true iff path empty (any tree extends the empty one).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == 0 {
        return path.is_empty();
    }
    if old_size == new_size {
        return path.is_empty() && old_root == new_root;
    }
    // A power-of-two old tree is a node of the new one: its root starts the proof implicitly.
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, path)
    } else {
        match path.split_first() {
            Some(split) => split,
            None => return false,
        }
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *old_root && sr == *new_root
}

/// The right edge of a tree: the roots of its complete subtrees, largest first. Appends in O(log n)
/// and gives the root in O(log n) without any storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    /// Number of leaves.
    size: u64,
    /// One root per set bit of `size`, highest bit (largest subtree) first.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from its stored complete subtrees:
    /// `subtree(level, index)` returns the hash of the complete subtree at `level` (2^level leaves) number `index`
    /// (covering leaves index*2^level .. (index+1)*2^level).
    pub fn restore<E>(
        size: u64,
        subtree: &mut impl FnMut(u8, u64) -> Result<Hash, E>,
    ) -> Result<Frontier, E> {
        let mut nodes = Vec::with_capacity(size.count_ones() as usize);
        for level in (0u8..64).rev() {
            if (size >> level) & 1 == 1 {
                // Bit `level` is set, so size >> level is odd and >= 1.
                nodes.push(subtree(level, (size >> level) - 1)?);
            }
        }
        Ok(Frontier { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The complete subtrees the frontier holds, as (level, index, hash),
    /// largest first: one per set bit of the size. They are every node left
    /// of the tree's end that the audit path of a later leaf can need.
    pub fn subtrees(&self) -> impl Iterator<Item = (u8, u64, Hash)> + '_ {
        let levels = (0u8..64)
            .rev()
            .filter(|level| (self.size >> level) & 1 == 1);
        levels
            .zip(&self.nodes)
            .map(|(level, hash)| (level, (self.size >> level) - 1, *hash))
    }

    /// Appends a leaf hash; returns every complete subtree this append completed, as (level, index, hash),
    /// starting with (0, old_size, leaf) — so the caller can store them.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let old = self.size;
        let mut completed = vec![(0u8, old, leaf)];
        let mut hash = leaf;
        let mut level = 0u8;
        // Each set low bit of the old size is a same-sized subtree that merges with the new one.
        while level < 64 && (old >> level) & 1 == 1 {
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            level += 1;
            completed.push((level, old >> level, hash));
        }
        self.nodes.push(hash);
        self.size = old + 1;
        completed
    }

    /// MTH of the tree so far (empty_root() when empty).
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(last) => iter.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

/// Where a complete subtree sits: the (level, index) pairs whose complete subtrees exactly tile
/// [start, end) when that range is a node of the RFC 9162 recursion — used by storage to answer `subtree(start, end)`.
/// For an aligned power-of-two range it is one pair; otherwise the decomposition, left to right.
pub fn tiles(start: u64, end: u64) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        // The largest aligned block starting at `at` that still fits before `end`.
        let fits = 63 - (end - at).leading_zeros();
        let level = at.trailing_zeros().min(fits);
        out.push((level as u8, at >> level));
        at += 1u64 << level;
    }
    out
}

/// Combines tile hashes (left to right, as `tiles` returned them) into MTH(D[start:end]): fold from the right, node_hash(left, acc).
pub fn combine_tiles(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(
        rest.iter()
            .rev()
            .fold(*last, |acc, left| node_hash(left, &acc)),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    const TEST_LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    const TEST_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves(n: u64, seed: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| {
                let mut data = seed.to_be_bytes().to_vec();
                data.extend_from_slice(&i.to_be_bytes());
                leaf_hash(&data)
            })
            .collect()
    }

    /// Reference oracle: MTH over a slice, checking the documented shape of every asked range.
    fn reference(leaves: &[Hash], size: u64) -> impl FnMut(u64, u64) -> Result<Hash, String> + '_ {
        move |start, end| {
            let len = end - start;
            let aligned = len.is_power_of_two() && start % len == 0;
            assert!(start < end && end <= size, "bad range {start}..{end}");
            assert!(aligned || end == size, "range {start}..{end} of {size}");
            Ok(root_from_leaf_hashes(&leaves[start as usize..end as usize]))
        }
    }

    /// Every complete subtree of a tree built by pushing `leaves`.
    fn stored(leaves: &[Hash]) -> HashMap<(u8, u64), Hash> {
        let mut frontier = Frontier::new();
        let mut map = HashMap::new();
        for leaf in leaves {
            for (level, index, hash) in frontier.push(*leaf) {
                assert!(map.insert((level, index), hash).is_none());
            }
        }
        map
    }

    /// Oracle answering `subtree(start, end)` only from stored complete subtrees.
    fn tiled(map: &HashMap<(u8, u64), Hash>) -> impl FnMut(u64, u64) -> Result<Hash, String> + '_ {
        move |start, end| {
            let hashes = tiles(start, end)
                .into_iter()
                .map(|key| map.get(&key).copied().ok_or(format!("missing {key:?}")))
                .collect::<Result<Vec<_>, _>>()?;
            combine_tiles(&hashes).ok_or_else(|| "empty range".to_string())
        }
    }

    /// Sibling sides (true = sibling on the right) of the RFC path, bottom-up; None when out of range.
    fn shape(index: u64, size: u64) -> Option<Vec<bool>> {
        if index >= size {
            return None;
        }
        let mut sides = Vec::new();
        let (mut lo, mut hi) = (0, size);
        while hi - lo > 1 {
            let k = split_point(hi - lo);
            if index < lo + k {
                sides.push(true);
                hi = lo + k;
            } else {
                sides.push(false);
                lo += k;
            }
        }
        sides.reverse();
        Some(sides)
    }

    fn flip(mut h: Hash, bit: usize) -> Hash {
        h[bit / 8 % 32] ^= 1 << (bit % 8);
        h
    }

    #[test]
    fn empty_and_basic_hashes() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(root_from_leaf_hashes(&[]), empty_root());
        assert_eq!(Frontier::new().root(), empty_root());
        assert_eq!(Frontier::new().size(), 0);
        assert_eq!(combine_tiles(&[]), None);
        assert!(tiles(5, 5).is_empty());
    }

    #[test]
    fn split_points() {
        assert_eq!(split_point(0), 0);
        assert_eq!(split_point(1), 0);
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
        assert_eq!(split_point((1 << 63) + 1), 1 << 63);
    }

    #[test]
    fn known_vectors() {
        let hashes: Vec<Hash> = TEST_LEAVES.iter().map(|d| leaf_hash(d)).collect();
        let mut frontier = Frontier::new();
        for (n, expected) in TEST_ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(root_from_leaf_hashes(&hashes[..=n])), *expected);
            frontier.push(hashes[n]);
            assert_eq!(hex::encode(frontier.root()), *expected);
        }
    }

    #[test]
    fn known_vector_proofs() {
        let hashes: Vec<Hash> = TEST_LEAVES.iter().map(|d| leaf_hash(d)).collect();
        let root = |n: usize| root_from_leaf_hashes(&hashes[..n]);
        let mut oracle = reference(&hashes, 8);
        // RFC 9162 §2.1.5 examples: the path for d0 is [b, h, l]; PROOF(3, D[7]) = [c, d, g, l].
        let path = inclusion_path(0, 8, &mut oracle).unwrap();
        assert_eq!(
            path,
            vec![
                hashes[1],
                root_from_leaf_hashes(&hashes[2..4]),
                root_from_leaf_hashes(&hashes[4..8])
            ]
        );
        let mut oracle = reference(&hashes, 7);
        let proof = consistency_path(3, 7, &mut oracle).unwrap();
        assert_eq!(
            proof,
            vec![
                hashes[2],
                hashes[3],
                root_from_leaf_hashes(&hashes[0..2]),
                root_from_leaf_hashes(&hashes[4..7]),
            ]
        );
        assert!(verify_consistency(3, 7, &root(3), &root(7), &proof));
        // PROOF(4, D[7]) = [l]; PROOF(6, D[7]) = [i, j, k].
        let proof = consistency_path(4, 7, &mut oracle).unwrap();
        assert_eq!(proof, vec![root_from_leaf_hashes(&hashes[4..7])]);
        assert!(verify_consistency(4, 7, &root(4), &root(7), &proof));
        let proof = consistency_path(6, 7, &mut oracle).unwrap();
        assert_eq!(
            proof,
            vec![
                root_from_leaf_hashes(&hashes[4..6]),
                hashes[6],
                root_from_leaf_hashes(&hashes[0..4]),
            ]
        );
        assert!(verify_consistency(6, 7, &root(6), &root(7), &proof));
    }

    #[test]
    fn proof_errors() {
        let hashes = leaves(5, 1);
        let mut oracle = reference(&hashes, 5);
        assert_eq!(
            inclusion_path(5, 5, &mut oracle),
            Err(ProofError::OutOfRange)
        );
        assert_eq!(
            inclusion_path(0, 0, &mut oracle),
            Err(ProofError::OutOfRange)
        );
        assert_eq!(
            consistency_path(0, 5, &mut oracle),
            Err(ProofError::OutOfRange)
        );
        assert_eq!(
            consistency_path(4, 3, &mut oracle),
            Err(ProofError::OutOfRange)
        );
        assert_eq!(consistency_path(5, 5, &mut oracle), Ok(vec![]));
        assert_eq!(inclusion_path(0, 1, &mut oracle), Ok(vec![]));
        let mut failing = |_: u64, _: u64| Err::<Hash, _>("down");
        assert_eq!(
            inclusion_path(1, 5, &mut failing),
            Err(ProofError::Source("down"))
        );
        assert_eq!(
            consistency_path(2, 5, &mut failing),
            Err(ProofError::Source("down"))
        );
        assert_eq!(
            ProofError::<&str>::OutOfRange.to_string(),
            "proof index or size out of range"
        );
        assert_eq!(
            ProofError::Source("down").to_string(),
            "cannot read subtree hash: down"
        );
    }

    #[test]
    fn degenerate_verification() {
        let h = leaves(3, 2);
        let r1 = h[0];
        let r3 = root_from_leaf_hashes(&h);
        assert!(verify_inclusion(&h[0], 0, 1, &[], &r1));
        assert!(!verify_inclusion(&h[0], 0, 0, &[], &r1));
        assert!(!verify_inclusion(&h[0], 1, 1, &[], &r1));
        assert!(verify_consistency(0, 0, &empty_root(), &empty_root(), &[]));
        assert!(verify_consistency(0, 3, &empty_root(), &r3, &[]));
        assert!(!verify_consistency(0, 3, &empty_root(), &r3, &[h[0]]));
        assert!(verify_consistency(3, 3, &r3, &r3, &[]));
        assert!(!verify_consistency(3, 3, &r3, &r1, &[]));
        assert!(!verify_consistency(3, 3, &r3, &r3, &[h[0]]));
        assert!(!verify_consistency(3, 1, &r3, &r1, &[]));
        assert!(!verify_consistency(1, 3, &r1, &r3, &[]));
        assert!(!verify_consistency(
            2,
            3,
            &root_from_leaf_hashes(&h[..2]),
            &r3,
            &[]
        ));
    }

    #[test]
    fn frontier_matches_reference_and_reports_completed_nodes() {
        let hashes = leaves(200, 3);
        let mut frontier = Frontier::new();
        for (i, leaf) in hashes.iter().enumerate() {
            let old = i as u64;
            let completed = frontier.push(*leaf);
            assert_eq!(frontier.size(), old + 1);
            assert_eq!(frontier.root(), root_from_leaf_hashes(&hashes[..=i]));
            assert_eq!(completed[0], (0, old, *leaf));
            let expected_levels = (old + 1).trailing_zeros() as usize + 1;
            assert_eq!(completed.len(), expected_levels);
            for (n, (level, index, hash)) in completed.iter().enumerate() {
                assert_eq!(*level as usize, n);
                let width = 1usize << level;
                let start = *index as usize * width;
                assert_eq!(start + width, i + 1, "ends at the new leaf");
                assert_eq!(*hash, root_from_leaf_hashes(&hashes[start..start + width]));
            }
        }
    }

    #[test]
    fn frontier_push_small_sizes() {
        let h = leaves(4, 4);
        let mut f = Frontier::new();
        assert_eq!(f.push(h[0]), vec![(0, 0, h[0])]);
        let n01 = node_hash(&h[0], &h[1]);
        assert_eq!(f.push(h[1]), vec![(0, 1, h[1]), (1, 0, n01)]);
        assert_eq!(f.push(h[2]), vec![(0, 2, h[2])]);
        let n23 = node_hash(&h[2], &h[3]);
        assert_eq!(
            f.push(h[3]),
            vec![(0, 3, h[3]), (1, 1, n23), (2, 0, node_hash(&n01, &n23))]
        );
    }

    #[test]
    fn frontier_restore_equals_live() {
        let hashes = leaves(300, 5);
        let map = stored(&hashes);
        let mut live = Frontier::new();
        for size in 0..=hashes.len() {
            let restored = Frontier::restore(size as u64, &mut |level, index| {
                map.get(&(level, index)).copied().ok_or((level, index))
            })
            .unwrap();
            assert_eq!(restored, live);
            assert_eq!(restored.root(), root_from_leaf_hashes(&hashes[..size]));
            if size < hashes.len() {
                live.push(hashes[size]);
            }
        }
        let missing: Result<Frontier, &str> = Frontier::restore(3, &mut |_, _| Err("gone"));
        assert_eq!(missing, Err("gone"));
    }

    #[test]
    fn tiles_shapes() {
        assert_eq!(tiles(0, 8), vec![(3, 0)]);
        assert_eq!(tiles(8, 12), vec![(2, 2)]);
        assert_eq!(tiles(0, 7), vec![(2, 0), (1, 2), (0, 6)]);
        assert_eq!(tiles(8, 13), vec![(2, 2), (0, 12)]);
        assert_eq!(tiles(6, 7), vec![(0, 6)]);
        assert_eq!(tiles(0, u64::MAX).len(), 64);
    }

    /// Every range the proof recursions ask for, checked against the reference MTH.
    #[test]
    fn tiles_match_reference_for_recursion_ranges() {
        let hashes = leaves(130, 6);
        for size in 1..=hashes.len() as u64 {
            let mut ranges = HashSet::new();
            let mut record = |s: u64, e: u64| {
                ranges.insert((s, e));
                Ok::<Hash, ()>([0; 32])
            };
            for index in 0..size {
                inclusion_path(index, size, &mut record).unwrap();
            }
            for old in 1..=size {
                consistency_path(old, size, &mut record).unwrap();
            }
            for (s, e) in ranges {
                let tile_hashes: Vec<Hash> = tiles(s, e)
                    .into_iter()
                    .map(|(level, index)| {
                        let a = (index << level) as usize;
                        root_from_leaf_hashes(&hashes[a..a + (1usize << level)])
                    })
                    .collect();
                let len = e - s;
                if len.is_power_of_two() && s % len == 0 {
                    assert_eq!(tile_hashes.len(), 1);
                }
                assert_eq!(
                    combine_tiles(&tile_hashes),
                    Some(root_from_leaf_hashes(&hashes[s as usize..e as usize])),
                    "range {s}..{e} of {size}"
                );
            }
        }
    }

    /// Exhaustive over small trees: the storage oracle gives the reference proofs.
    #[test]
    fn tiled_oracle_matches_reference_exhaustive() {
        let hashes = leaves(70, 7);
        let map = stored(&hashes);
        for size in 1..=hashes.len() as u64 {
            let mut refo = reference(&hashes, size);
            let mut tile = tiled(&map);
            let root = root_from_leaf_hashes(&hashes[..size as usize]);
            for index in 0..size {
                let path = inclusion_path(index, size, &mut tile).unwrap();
                assert_eq!(path, inclusion_path(index, size, &mut refo).unwrap());
                assert!(verify_inclusion(
                    &hashes[index as usize],
                    index,
                    size,
                    &path,
                    &root
                ));
            }
            for old in 1..=size {
                let path = consistency_path(old, size, &mut tile).unwrap();
                assert_eq!(path, consistency_path(old, size, &mut refo).unwrap());
                let old_root = root_from_leaf_hashes(&hashes[..old as usize]);
                assert!(verify_consistency(old, size, &old_root, &root, &path));
            }
        }
    }

    fn inclusion_case() -> impl Strategy<Value = (u64, u64, u64)> {
        (1u64..300).prop_flat_map(|size| (Just(size), 0..size, any::<u64>()))
    }

    fn consistency_case() -> impl Strategy<Value = (u64, u64, u64)> {
        (1u64..300).prop_flat_map(|new| (1..=new, Just(new), any::<u64>()))
    }

    proptest! {
        #[test]
        fn inclusion_verifies_and_rejects_tampering(
            (size, index, seed) in inclusion_case(),
            pick in any::<usize>(),
            bit in 0usize..256,
            other_index in 0u64..320,
            other_size in 0u64..320,
            extra in any::<[u8; 32]>(),
        ) {
            let hashes = leaves(size, seed);
            let root = root_from_leaf_hashes(&hashes);
            let leaf = hashes[index as usize];
            let path = inclusion_path(index, size, &mut reference(&hashes, size)).unwrap();
            prop_assert!(verify_inclusion(&leaf, index, size, &path, &root));

            let map = stored(&hashes);
            prop_assert_eq!(&inclusion_path(index, size, &mut tiled(&map)).unwrap(), &path);

            if !path.is_empty() {
                let i = pick % path.len();
                let mut bad = path.clone();
                bad[i] = flip(bad[i], bit);
                prop_assert!(!verify_inclusion(&leaf, index, size, &bad, &root));
                let mut dropped = path.clone();
                dropped.remove(i);
                prop_assert!(!verify_inclusion(&leaf, index, size, &dropped, &root));
            }
            let mut added = path.clone();
            added.insert(pick % (path.len() + 1), extra);
            prop_assert!(!verify_inclusion(&leaf, index, size, &added, &root));
            prop_assert!(!verify_inclusion(&flip(leaf, bit), index, size, &path, &root));
            prop_assert!(!verify_inclusion(&leaf, index, size, &path, &flip(root, bit)));

            // A different index (or size) verifies only where the RFC path has the same
            // shape; a different index never does.
            let original = shape(index, size);
            if other_index != index {
                prop_assert!(!verify_inclusion(&leaf, other_index, size, &path, &root));
            }
            if other_size != size {
                let same = shape(index, other_size) == original;
                prop_assert_eq!(verify_inclusion(&leaf, index, other_size, &path, &root), same);
            }
        }

        #[test]
        fn consistency_verifies_and_rejects_tampering(
            (old, new, seed) in consistency_case(),
            pick in any::<usize>(),
            bit in 0usize..256,
        ) {
            let hashes = leaves(new, seed);
            let old_root = root_from_leaf_hashes(&hashes[..old as usize]);
            let new_root = root_from_leaf_hashes(&hashes);
            let path = consistency_path(old, new, &mut reference(&hashes, new)).unwrap();
            prop_assert_eq!(path.is_empty(), old == new);
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &path));

            let map = stored(&hashes);
            prop_assert_eq!(&consistency_path(old, new, &mut tiled(&map)).unwrap(), &path);

            prop_assert!(!verify_consistency(old, new, &flip(old_root, bit), &new_root, &path));
            prop_assert!(!verify_consistency(old, new, &old_root, &flip(new_root, bit), &path));
            if !path.is_empty() {
                let i = pick % path.len();
                let mut bad = path.clone();
                bad[i] = flip(bad[i], bit);
                prop_assert!(!verify_consistency(old, new, &old_root, &new_root, &bad));
                prop_assert!(!verify_consistency(old, new, &old_root, &new_root, &path[..path.len() - 1]));
                prop_assert!(!verify_consistency(old, new, &old_root, &new_root, &path[1..]));
            }
        }
    }
}
