//! One generation's decomposition: which elements each child changes, and by how much.

use super::config::{Config, MAX_SCALE, Mode, ScaleRule, Subspaces};
use super::keys::{KeyStream, Purpose};
use super::perm::Perm;
use super::recipe::Member;
use super::simd::multiversion;
use super::{MutateError, invalid, philox, radix};
use rayon::prelude::*;
use std::collections::HashSet;

/// Elements per parallel work item: large enough that scheduling costs nothing, small enough
/// to spread a big tensor over all threads. Results never depend on it.
const CHUNK: usize = 1 << 16;

/// A mutable tensor as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Unique, stable key (the model's `TensorInfo::key()`): the RNG stream key.
    pub key: String,
    /// Number of elements (at most `u32::MAX`).
    pub elements: usize,
    /// Population standard deviation of the parent's values ([`super::tensor_std`]); only used
    /// with [`ScaleRule::Relative`].
    pub std: f64,
}

impl TensorSpec {
    /// The spec of a tensor with these parent values (std from [`super::tensor_std`]).
    pub fn from_values(key: impl Into<String>, values: &crate::TensorData) -> Self {
        Self {
            key: key.into(),
            elements: values.len(),
            std: super::tensor_std(values),
        }
    }
}

/// The change a child (or merged candidate) makes to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Index into the plan's tensor list.
    pub tensor: usize,
    /// Changed elements, ascending, distinct.
    pub indices: Vec<u32>,
    /// Signed, scaled noise to add at each index.
    pub values: Vec<f32>,
}

#[derive(Debug, Clone)]
enum Assign {
    /// One subspace owns every element (k = 1 partition).
    All,
    /// Balanced keyed partition: element j is in block ⌊((π(j)+1)·K − 1)/n⌋ (blocks
    /// `[⌊b·n/K⌋, ⌊(b+1)·n/K⌋)`), which is subspace `(block + offset) mod K`.
    Partition { perm: Perm, offset: u32 },
    /// Each subspace draws its own subset (keyed per subspace, computed on demand).
    Density { count: u64 },
    /// The whole tensor belongs to one subspace.
    Layer { owner: u32 },
}

#[derive(Debug, Clone)]
struct TensorPlan {
    key: String,
    n: u64,
    scale: f32,
    eps: philox::Key,
    assign: Assign,
}

/// One generation's decomposition of ε into k children.
///
/// Every method is a pure function of (config, tensor specs, generation, arguments): the same
/// inputs give bit-identical outputs on any machine, with any number of rayon threads, and
/// whatever other children are or are not computed.
#[derive(Debug, Clone)]
pub struct Plan {
    config: Config,
    generation: u32,
    subspaces: u32,
    tensors: Vec<TensorPlan>,
    digest: String,
}

/// A short digest (32 hex digits, BLAKE3) of a tensor list: keys, element counts and stds, in
/// order. A recipe stores it so that regenerating a child from a different tensor list (other
/// selection, other parent values) is an error rather than a silently different child.
pub fn tensor_list_digest(tensors: &[TensorSpec]) -> String {
    let mut h = blake3::Hasher::new_derive_key("smd-onnx 2026 mutable tensor list v1");
    h.update(&(tensors.len() as u64).to_le_bytes());
    for t in tensors {
        h.update(&(t.key.len() as u64).to_le_bytes());
        h.update(t.key.as_bytes());
        h.update(&(t.elements as u64).to_le_bytes());
        h.update(&t.std.to_bits().to_le_bytes());
    }
    h.finalize().to_hex()[..32].to_string()
}

/// Reference form of the block formula (tests check the fast one against it).
#[cfg(test)]
fn block_of(p: u64, n: u64, k: u64) -> u64 {
    // The b with b·n < (p+1)·k ≤ (b+1)·n; p < 2^32 and k < 2^16, so no overflow.
    ((p + 1) * k - 1) / n
}

/// The block of position `p`: the `b` with `b·n < (p+1)·k ≤ (b+1)·n`, through f64 so that it
/// vectorises. Exact: the numerator is an integer below 2^48 (exact in f64) and the quotient
/// is below 2^16, so a non-integer quotient lies at least 1/n ≥ 2^-32 below the next integer
/// while the division's rounding error is at most 2^16 · 2^-53 = 2^-37; the floor never
/// crosses an integer, and the i32 conversion of a value below 2^16 is exact.
#[inline(always)]
fn block_of_f64(p: u32, n: f64, k: f64) -> u32 {
    (((f64::from(p) + 1.0) * k - 1.0) / n) as i32 as u32
}

multiversion! {
    /// `out[i]` = the subspace of element `first + i` of a partitioned tensor.
    fn map_chunk / map_chunk_portable(perm: &Perm, first: u32, n: u64, k: u32, offset: u32, out: &mut [u16]) {
        let mut p = vec![0u32; out.len()];
        perm.forward_range_inline(first, &mut p);
        let (nf, kf) = (n as f64, f64::from(k));
        for (o, &p) in out.iter_mut().zip(p.iter()) {
            // block < k and offset < k: one conditional subtraction is `mod k`.
            let s = block_of_f64(p, nf, kf) + offset;
            *o = (if s >= k { s - k } else { s }) as u16;
        }
    }
}

/// Keys must be unique and every tensor addressable with u32 indices.
fn check_tensors(tensors: &[TensorSpec]) -> Result<(), MutateError> {
    let mut seen = HashSet::new();
    for t in tensors {
        if !seen.insert(t.key.as_str()) {
            return Err(MutateError::Tensor {
                key: t.key.clone(),
                msg: "appears twice in the mutable tensor list (keys must be unique)".into(),
            });
        }
        if u32::try_from(t.elements).is_err() {
            return Err(MutateError::Tensor {
                key: t.key.clone(),
                msg: format!(
                    "has {} elements; at most {} can be mutated",
                    t.elements,
                    u32::MAX
                ),
            });
        }
    }
    Ok(())
}

/// Layer mode: each tensor's subspace. Non-empty tensors are ranked by a keyed hash of their
/// key (independent of list order), then dealt to subspaces round-robin: counts differ by at
/// most one.
fn layer_owners(
    config: &Config,
    tensors: &[TensorSpec],
    assign_gen: Option<u32>,
) -> Result<Vec<u32>, MutateError> {
    let subspaces = config.subspaces();
    let mut ranked: Vec<(u64, &str, usize)> = tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.elements > 0)
        .map(|(i, t)| {
            let h = KeyStream::new(config.seed, Purpose::Layer, assign_gen, &t.key).next_u64();
            (h, t.key.as_str(), i)
        })
        .collect();
    if (ranked.len() as u64) < u64::from(subspaces) {
        return Err(invalid(
            "--children",
            format!(
                "layer mode needs at most one subspace per mutable tensor: {} subspaces{} \
                 but {} non-empty mutable tensors",
                subspaces,
                if config.antithetic {
                    " (k/2, antithetic)"
                } else {
                    ""
                },
                ranked.len()
            ),
        ));
    }
    ranked.sort_unstable();
    let mut owner = vec![0u32; tensors.len()];
    for (rank, &(_, _, i)) in ranked.iter().enumerate() {
        if let Some(o) = owner.get_mut(i) {
            *o = (rank as u64 % u64::from(subspaces)) as u32;
        }
    }
    Ok(owner)
}

/// The noise's standard deviation for tensor `t`: σ, or σ·std with a relative scale.
fn noise_scale(config: &Config, t: &TensorSpec) -> Result<f32, MutateError> {
    match config.scale {
        ScaleRule::Absolute => Ok(config.sigma as f32),
        ScaleRule::Relative => {
            if !t.std.is_finite() || t.std < 0.0 {
                return Err(MutateError::Tensor {
                    key: t.key.clone(),
                    msg: format!("standard deviation {} is not a finite number ≥ 0", t.std),
                });
            }
            if config.sigma * t.std > MAX_SCALE {
                return Err(MutateError::Tensor {
                    key: t.key.clone(),
                    msg: format!(
                        "noise scale σ·std = {} does not fit in float32",
                        config.sigma * t.std
                    ),
                });
            }
            Ok((config.sigma * t.std) as f32)
        }
    }
}

impl Plan {
    /// Plans generation `generation` over `tensors` (their order defines `Delta::tensor`; the
    /// noise and assignment of a tensor depend on its key, not its position).
    ///
    /// Errors: invalid config; a tensor with more than `u32::MAX` elements; duplicate keys;
    /// with relative σ, a std that is negative or not finite, or σ·std beyond float32; layer
    /// mode with more subspaces than non-empty tensors.
    pub fn new(
        config: &Config,
        tensors: &[TensorSpec],
        generation: u32,
    ) -> Result<Plan, MutateError> {
        config.validate()?;
        check_tensors(tensors)?;
        let subspaces = config.subspaces();
        let assign_gen = match config.subspaces {
            Subspaces::Dynamic => Some(generation),
            Subspaces::Static => None,
        };
        let layer_owner = if config.mode == Mode::Layer {
            layer_owners(config, tensors, assign_gen)?
        } else {
            vec![0; tensors.len()]
        };
        let planned = tensors
            .iter()
            .zip(&layer_owner)
            .map(|(t, &owner)| {
                let n = t.elements as u64;
                let eps = KeyStream::new(config.seed, Purpose::Eps, Some(generation), &t.key)
                    .philox_key();
                let assign = match config.mode {
                    Mode::Partition if subspaces == 1 => Assign::All,
                    Mode::Partition => {
                        let mut ks =
                            KeyStream::new(config.seed, Purpose::Assign, assign_gen, &t.key);
                        let perm = Perm::from_stream(n as u32, &mut ks);
                        let offset = (ks.next_u64() % u64::from(subspaces)) as u32;
                        Assign::Partition { perm, offset }
                    }
                    Mode::Density(p) => Assign::Density {
                        // (p·n).round() ≤ n since p ≤ 1; `min` guards float surprises.
                        count: ((p * n as f64).round() as u64).min(n),
                    },
                    Mode::Layer => Assign::Layer { owner },
                };
                Ok(TensorPlan {
                    key: t.key.clone(),
                    n,
                    scale: noise_scale(config, t)?,
                    eps,
                    assign,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            config: *config,
            generation,
            subspaces,
            tensors: planned,
            digest: tensor_list_digest(tensors),
        })
    }

    /// Digest of the tensor list this plan was made from (see [`tensor_list_digest`]).
    pub fn tensor_digest(&self) -> &str {
        &self.digest
    }

    /// The settings this plan was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The generation this plan was made for.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Number of children k.
    pub fn children(&self) -> u32 {
        self.config.children
    }

    /// Number of subspaces: k, or k/2 with antithetic pairs.
    pub fn subspaces(&self) -> u32 {
        self.subspaces
    }

    /// Number of tensors in the plan.
    pub fn tensors(&self) -> usize {
        self.tensors.len()
    }

    /// The subspace child `child` mutates: `child`, or `child / 2` with antithetic pairs.
    pub fn subspace_of(&self, child: u32) -> u32 {
        if self.config.antithetic {
            child / 2
        } else {
            child
        }
    }

    /// The sign child `child` applies to ε: −1 for the odd member of an antithetic pair.
    pub fn sign(&self, child: u32) -> f32 {
        if self.config.antithetic && child % 2 == 1 {
            -1.0
        } else {
            1.0
        }
    }

    /// The noise scale of tensor `tensor` (σ·std or σ, as float32). 0 means the tensor is
    /// never changed (σ = 0, or a constant tensor under relative σ) and gets no `Delta`.
    pub fn scale(&self, tensor: usize) -> Option<f32> {
        self.tensors.get(tensor).map(|t| t.scale)
    }

    /// In layer mode, the subspace that owns tensor `tensor` (`None` in other modes).
    pub fn tensor_owner(&self, tensor: usize) -> Option<u32> {
        match self.tensors.get(tensor)?.assign {
            Assign::Layer { owner } => Some(owner),
            _ => None,
        }
    }

    fn check_child(&self, child: u32) -> Result<(), MutateError> {
        if child >= self.config.children {
            return Err(invalid(
                "child",
                format!(
                    "index {child} is out of range for {} children",
                    self.config.children
                ),
            ));
        }
        Ok(())
    }

    fn tensor(&self, tensor: usize) -> Result<&TensorPlan, MutateError> {
        self.tensors.get(tensor).ok_or_else(|| {
            invalid(
                "tensor",
                format!(
                    "index {tensor} is out of range for {} planned tensors",
                    self.tensors.len()
                ),
            )
        })
    }

    /// The elements of tensor `t` in subspace `s`, ascending (or in an unspecified order when
    /// `sorted` is false).
    fn subspace_indices(&self, t: &TensorPlan, s: u32, sorted: bool) -> Vec<u32> {
        let n = t.n;
        let k = u64::from(self.subspaces);
        let range: std::ops::Range<u64> = match &t.assign {
            Assign::All => 0..n,
            Assign::Layer { owner } => {
                if *owner == s {
                    0..n
                } else {
                    0..0
                }
            }
            Assign::Partition { perm, offset } => {
                // Subspace s is block (s − offset) mod K of π's image.
                let b = (u64::from(s) + k - u64::from(*offset)) % k;
                let lo = b * n / k;
                let hi = (b + 1) * n / k;
                // n ≤ u32::MAX, so block bounds fit u32.
                let mut v = vec![0u32; (hi - lo) as usize];
                v.par_chunks_mut(CHUNK)
                    .enumerate()
                    .for_each(|(c, out)| perm.inverse_range((lo + (c * CHUNK) as u64) as u32, out));
                if sorted {
                    radix::sort(&mut v, radix::bits_below(n));
                }
                return v;
            }
            Assign::Density { count } => {
                let gen_ = self.assign_generation();
                let mut ks = KeyStream::new(self.config.seed, Purpose::Density(s), gen_, &t.key);
                let perm = Perm::from_stream(n as u32, &mut ks);
                let mut v = vec![0u32; *count as usize];
                v.par_chunks_mut(CHUNK)
                    .enumerate()
                    .for_each(|(c, out)| perm.forward_range((c * CHUNK) as u32, out));
                if sorted {
                    radix::sort(&mut v, radix::bits_below(n));
                }
                return v;
            }
        };
        (range.start as u32..range.end as u32).collect()
    }

    fn assign_generation(&self) -> Option<u32> {
        match self.config.subspaces {
            Subspaces::Dynamic => Some(self.generation),
            Subspaces::Static => None,
        }
    }

    /// ε (scaled, times `sign`) at each of `indices` (ascending, distinct, below `t.n`).
    fn values_at(t: &TensorPlan, indices: &[u32], sign: f32) -> Vec<f32> {
        let scale = if sign < 0.0 { -t.scale } else { t.scale };
        let mut v = vec![0f32; indices.len()];
        if indices.len() as u64 == t.n {
            // Every element: the dense path writes straight into the output.
            v.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
                philox::fill_gauss(t.eps, (c * CHUNK) as u64, scale, out);
            });
        } else if (indices.len() as u64) * 4 >= t.n {
            // Dense enough that generating whole chunks (4 normals per Philox block, 2 per
            // Box–Muller) and picking beats one block per element. Same values either way.
            let mut pieces = Vec::new();
            let (mut rest_v, mut rest_i) = (v.as_mut_slice(), indices);
            let mut base = 0u64;
            while !rest_i.is_empty() {
                let end = base + CHUNK as u64;
                let cut = rest_i.partition_point(|&j| u64::from(j) < end);
                let (iv, tv) = std::mem::take(&mut rest_v).split_at_mut(cut);
                let (ii, ti) = rest_i.split_at(cut);
                if cut > 0 {
                    pieces.push((base, iv, ii));
                }
                (rest_v, rest_i, base) = (tv, ti, end);
            }
            pieces.into_par_iter().for_each(|(base, out, idx)| {
                let len = (t.n - base).min(CHUNK as u64) as usize;
                let mut buf = vec![0f32; len];
                philox::fill_gauss(t.eps, base, scale, &mut buf);
                for (o, &j) in out.iter_mut().zip(idx) {
                    if let Some(&x) = buf.get((u64::from(j) - base) as usize) {
                        *o = x;
                    }
                }
            });
        } else {
            v.par_chunks_mut(CHUNK)
                .zip(indices.par_chunks(CHUNK))
                .for_each(|(out, idx)| philox::gather_gauss(t.eps, idx, scale, out));
        }
        v
    }

    fn dense(t: &TensorPlan) -> Vec<f32> {
        let mut v = vec![0f32; t.n as usize];
        v.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
            philox::fill_gauss(t.eps, (c * CHUNK) as u64, t.scale, out);
        });
        v
    }

    /// Child `child`'s changes: for each tensor with a non-zero scale where it owns elements,
    /// `sign(child) · ε` at those elements. Cost is proportional to the elements it changes.
    pub fn child(&self, child: u32) -> Result<Vec<Delta>, MutateError> {
        self.check_child(child)?;
        let s = self.subspace_of(child);
        let sign = self.sign(child);
        Ok(self
            .tensors
            .par_iter()
            .enumerate()
            .filter(|(_, t)| t.scale != 0.0)
            .filter_map(|(i, t)| {
                let indices = self.subspace_indices(t, s, true);
                if indices.is_empty() {
                    return None;
                }
                let values = Self::values_at(t, &indices, sign);
                Some(Delta {
                    tensor: i,
                    indices,
                    values,
                })
            })
            .collect())
    }

    /// The merged candidate of `children` (duplicates ignored): the union of their changes,
    /// each element's δ once. An element changed by listed children of one sign gets
    /// `sign · ε_j`; an element changed by both a +ε and a −ε child (antithetic pairs) cancels
    /// and is left out. Without antithetic pairs this is ε on the union of their elements.
    pub fn merged(&self, children: &[u32]) -> Result<Vec<Delta>, MutateError> {
        let mut list = children.to_vec();
        list.sort_unstable();
        list.dedup();
        for &c in &list {
            self.check_child(c)?;
        }
        // Per subspace: bit 0 = a +ε child is listed, bit 1 = a −ε child is listed.
        let mut flags: Vec<(u32, u8)> = Vec::new();
        for &c in &list {
            let s = self.subspace_of(c);
            let f = if self.sign(c) < 0.0 { 2 } else { 1 };
            match flags.last_mut() {
                Some((ls, lf)) if *ls == s => *lf |= f,
                _ => flags.push((s, f)),
            }
        }
        Ok(self
            .tensors
            .par_iter()
            .enumerate()
            .filter(|(_, t)| t.scale != 0.0)
            .filter_map(|(i, t)| {
                // Mark each element with the signs of the listed subspaces that own it, then
                // read the marks in element order: O(n + changed), no sorting.
                let mut marks = vec![0u8; t.n as usize];
                for &(s, f) in &flags {
                    for j in self.subspace_indices(t, s, false) {
                        if let Some(m) = marks.get_mut(j as usize) {
                            *m |= f;
                        }
                    }
                }
                // 1: only +ε children, 2: only −ε children, 3: both (cancels). Branch-free
                // compaction: write every element, advance only past kept ones.
                let keep = |m: u8| m == 1 || m == 2;
                let count = marks.iter().filter(|&&m| keep(m)).count();
                if count == 0 {
                    return None;
                }
                let mut indices = vec![0u32; count + 1];
                let mut signs = vec![0u32; count + 1];
                let mut c = 0usize;
                for (j, &m) in marks.iter().enumerate() {
                    if let (Some(i), Some(s)) = (indices.get_mut(c), signs.get_mut(c)) {
                        *i = j as u32;
                        *s = u32::from(m == 2) << 31;
                    }
                    c += usize::from(keep(m));
                }
                drop(marks);
                indices.truncate(count);
                let mut values = Self::values_at(t, &indices, 1.0);
                for (v, &neg) in values.iter_mut().zip(&signs) {
                    *v = f32::from_bits(v.to_bits() ^ neg);
                }
                Some(Delta {
                    tensor: i,
                    indices,
                    values,
                })
            })
            .collect())
    }

    /// The changes of a recipe's member: a child or a merged candidate.
    pub fn deltas(&self, member: &Member) -> Result<Vec<Delta>, MutateError> {
        match member {
            Member::Child(c) => self.child(*c),
            Member::Merged(list) => self.merged(list),
            Member::Stretched { children, times } => {
                let mut deltas = self.merged(children)?;
                let k = *times as f32;
                for d in &mut deltas {
                    for v in &mut d.values {
                        *v *= k;
                    }
                }
                Ok(deltas)
            }
        }
    }

    /// The dense scaled ε of tensor `tensor` (all elements; zeros when its scale is 0).
    pub fn epsilon(&self, tensor: usize) -> Result<Vec<f32>, MutateError> {
        Ok(Self::dense(self.tensor(tensor)?))
    }

    /// Which subspace owns each element of tensor `tensor` (partition and layer modes; `None`
    /// in density mode, where subspaces overlap: use [`Plan::child_indices`]). With antithetic
    /// pairs the map holds subspaces m, and children 2m, 2m+1 are `W ± where(map == m, ε, 0)`.
    pub fn subspace_map(&self, tensor: usize) -> Result<Option<Vec<u16>>, MutateError> {
        let t = self.tensor(tensor)?;
        let n = t.n;
        let k = u64::from(self.subspaces);
        Ok(match &t.assign {
            Assign::All => Some(vec![0; n as usize]),
            Assign::Layer { owner } => Some(vec![*owner as u16; n as usize]),
            Assign::Density { .. } => None,
            Assign::Partition { perm, offset } => {
                let mut map = vec![0u16; n as usize];
                map.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
                    map_chunk(perm, (c * CHUNK) as u32, n, k as u32, *offset, out)
                });
                Some(map)
            }
        })
    }

    /// The elements of tensor `tensor` that child `child` owns, ascending (any mode; in density
    /// mode this is the way to get a child's subset). This is the assignment itself: it is
    /// returned even for a tensor whose scale is 0 (where `child` emits no `Delta`).
    pub fn child_indices(&self, child: u32, tensor: usize) -> Result<Vec<u32>, MutateError> {
        self.check_child(child)?;
        let t = self.tensor(tensor)?;
        Ok(self.subspace_indices(t, self.subspace_of(child), true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn f64_block_is_exact(n in 1u64..=u64::from(u32::MAX), k in 1u64..=65_535, x: u64) {
            // Hardest cases sit next to block boundaries: try both sides of one.
            let b = x % k;
            let edge = (b * n / k).min(n - 1);
            for p in [edge.saturating_sub(1), edge, (edge + 1).min(n - 1), x % n] {
                proptest::prop_assert_eq!(u64::from(block_of_f64(p as u32, n as f64, k as f64)), block_of(p, n, k));
            }
        }
    }

    #[test]
    fn portable_map_matches_dispatched() {
        let perm = Perm::new(100_000, [5, 6, 7, 8]);
        let (mut a, mut b) = (vec![0u16; 100_000], vec![0u16; 100_000]);
        map_chunk(&perm, 0, 100_000, 7, 3, &mut a);
        map_chunk_portable(&perm, 0, 100_000, 7, 3, &mut b);
        assert_eq!(a, b);
        assert!(a.iter().all(|&s| s < 7));
    }

    #[test]
    fn block_formula_matches_boundaries() {
        for n in 1u64..60 {
            for k in 1u64..20 {
                for p in 0..n {
                    let b = block_of(p, n, k);
                    assert!(b < k);
                    assert!(b * n / k <= p && p < (b + 1) * n / k, "n={n} k={k} p={p}");
                    assert_eq!(u64::from(block_of_f64(p as u32, n as f64, k as f64)), b);
                }
            }
        }
    }
}
