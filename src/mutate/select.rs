//! Which tensors may be mutated: the policy ([`Selection`]) and its verdicts ([`Mutability`]).
//!
//! The policy is pure: it reads the facts [`crate::onnx`] records for each tensor (dtype, dims,
//! where it is declared, whether it feeds a shape-like input) and decides. It lives here, next
//! to the mutation it feeds, rather than on [`Model`]: `onnx` only describes models and never
//! depends on `mutate`, so the modules still depend on each other one way (`mutate` → `onnx`).
//! Hence [`Selection::verdicts`] and [`Selection::mutable_tensors`] take the model, instead of
//! `Model` methods that would have to call back into `mutate`.
//!
//! The reasons name the CLI flags (`--include`, `--exclude`): `smd-onnx inspect` shows them.

use regex::Regex;

use crate::onnx::{Location, Model, TensorInfo};

/// Whether a tensor may be mutated, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutability {
    /// A mutation candidate.
    Mutable,
    /// Never mutated, with a short reason ("1-d (bias/norm)", "int64", ...).
    NotMutable(String),
}

impl Mutability {
    /// True for [`Mutability::Mutable`].
    pub fn is_mutable(&self) -> bool {
        matches!(self, Mutability::Mutable)
    }

    /// The reason a tensor is not mutable, if it is not.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Mutability::Mutable => None,
            Mutability::NotMutable(r) => Some(r),
        }
    }
}

/// The mutable-tensor rule. By default: float32/float16/bfloat16/float64 tensors with at least
/// two dimensions and at least one element, in initializers or `Constant` nodes (any subgraph
/// depth), and the weight arrays of `ai.onnx.ml` operators (a linear model's or an SVM's
/// coefficients, a tree ensemble's leaf values; [`Location::MlAttribute`], whatever their
/// rank). Their other float arrays (thresholds, intercepts) only when `include` matches them.
/// Quantized weights (int8/uint8/int4/uint4 tensors a quantized operator reads, see
/// [`crate::onnx::Quant`]) follow the float rule, as their dequantized values; their scales
/// and zero points are never mutable.
/// Never sparse tensors, other dtypes, training-graph tensors, or tensors consumed as a
/// shape-like input (a Reshape's shape, a Resize's scales, ...).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only tensors whose name (or key) matches, on top of the rule; it also adds the
    /// `ai.onnx.ml` arrays that are not weights by default.
    pub include: Option<Regex>,
    /// Never tensors whose name (or key) matches.
    pub exclude: Option<Regex>,
    /// Float tensors with fewer than two dimensions are candidates too.
    pub all_float: bool,
}

/// A selection description ([`Selection::describe`]) that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("selection {text:?}: {what}")]
pub struct SelectionError {
    /// The description.
    pub text: String,
    /// What is wrong.
    pub what: String,
}

impl Selection {
    /// The verdict for every tensor of `model`, in [`Model::tensors`] order.
    pub fn verdicts(&self, model: &Model) -> Vec<Mutability> {
        model.tensors().iter().map(|t| self.judge(t)).collect()
    }

    /// Indices (into [`Model::tensors`]) of the tensors this rule makes mutable.
    pub fn mutable_tensors(&self, model: &Model) -> Vec<usize> {
        model
            .tensors()
            .iter()
            .enumerate()
            .filter(|(_, t)| self.judge(t).is_mutable())
            .map(|(i, _)| i)
            .collect()
    }

    /// The verdict for one tensor of a model.
    pub fn judge(&self, t: &TensorInfo) -> Mutability {
        let no = |r: &str| Mutability::NotMutable(r.to_string());
        if t.location == Location::SparseInitializer {
            return no("sparse initializer");
        }
        if !t.dtype.is_mutable_float() {
            match t.quantization() {
                // Mutated as its dequantized float values.
                Some(Ok(_)) => {}
                Some(Err(why)) => return no(&format!("{} quantized: {why}", t.dtype.name())),
                None => return no(&t.dtype.name()),
            }
        }
        if t.training {
            return no("training graph");
        }
        if let Some(of) = &t.quant_param_of {
            return no(&format!("scale or zero point of quantized {of}"));
        }
        if t.elements == 0 {
            return no("empty");
        }
        if let Some(r) = &t.shape_use {
            return no(r);
        }
        let matches = |re: &Regex| re.is_match(&t.name) || re.is_match(t.key());
        if t.opt_in && !self.include.as_ref().is_some_and(matches) {
            return no("not a weight (name it with --include)");
        }
        if !self.all_float && t.dims.len() < 2 && t.location != Location::MlAttribute {
            return no(if t.dims.is_empty() {
                "scalar"
            } else {
                "1-d (bias/norm)"
            });
        }
        if self.exclude.as_ref().is_some_and(matches) {
            return no("excluded by --exclude");
        }
        if self.include.as_ref().is_some_and(|re| !matches(re)) {
            return no("not matched by --include");
        }
        Mutability::Mutable
    }

    /// The rule as recipes record it: `default` or `all-float`, then ` include=<regex>` and
    /// ` exclude=<regex>` when set (the patterns verbatim).
    pub fn describe(&self) -> String {
        let mut text = if self.all_float {
            "all-float"
        } else {
            "default"
        }
        .to_string();
        if let Some(i) = &self.include {
            text.push_str(" include=");
            text.push_str(i.as_str());
        }
        if let Some(e) = &self.exclude {
            text.push_str(" exclude=");
            text.push_str(e.as_str());
        }
        text
    }

    /// The rule a [`Selection::describe`] text stands for: the first of
    /// [`Selection::readings`].
    pub fn from_description(text: &str) -> Result<Selection, SelectionError> {
        let mut all = Self::readings(text)?;
        Ok(all.remove(0))
    }

    /// Every rule whose [`Selection::describe`] text is `text` (never empty). The text does
    /// not escape its patterns, so an include pattern that contains ` exclude=` makes it
    /// ambiguous: the readings that split there come first, the one that does not comes last
    /// (a recipe's tensor-list digest tells them apart).
    pub fn readings(text: &str) -> Result<Vec<Selection>, SelectionError> {
        const INCLUDE: &str = " include=";
        const EXCLUDE: &str = " exclude=";
        let err = |what: String| SelectionError {
            text: text.to_string(),
            what,
        };
        let (all_float, rest) = if let Some(r) = text.strip_prefix("all-float") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("default") {
            (false, r)
        } else {
            return Err(err("does not start with `default` or `all-float`".into()));
        };
        let mut splits: Vec<(Option<&str>, Option<&str>)> = Vec::new();
        if rest.is_empty() {
            splits.push((None, None));
        } else if let Some(r) = rest.strip_prefix(INCLUDE) {
            for (p, _) in r.match_indices(EXCLUDE) {
                splits.push((Some(&r[..p]), Some(&r[p + EXCLUDE.len()..])));
            }
            splits.push((Some(r), None));
        } else if let Some(r) = rest.strip_prefix(EXCLUDE) {
            splits.push((None, Some(r)));
        } else {
            return Err(err(format!(
                "unexpected {rest:?} (expected `{}` or `{}`)",
                INCLUDE.trim(),
                EXCLUDE.trim()
            )));
        }
        let compile = |what: &str, re: Option<&str>| {
            re.map(|r| {
                Regex::new(r).map_err(|e| {
                    // regex's syntax errors span lines (pattern, caret, message): keep the message.
                    let text = e.to_string();
                    let last = text.lines().map(str::trim).rfind(|l| !l.is_empty());
                    let msg = last.unwrap_or_default();
                    let msg = msg.strip_prefix("error: ").unwrap_or(msg);
                    err(format!("{what} {r:?}: invalid regular expression: {msg}"))
                })
            })
            .transpose()
        };
        let mut out = Vec::new();
        let mut first_err = None;
        for (include, exclude) in splits {
            match (compile("include", include), compile("exclude", exclude)) {
                (Ok(include), Ok(exclude)) => out.push(Selection {
                    include,
                    exclude,
                    all_float,
                }),
                (Err(e), _) | (_, Err(e)) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{encode, f32_raw, graph, model};

    #[test]
    fn include_exclude() {
        let w = [0.0f32; 4];
        let inits = vec![
            f32_raw("conv.weight", &[2, 2], &w),
            f32_raw("fc.weight", &[2, 2], &w),
            f32_raw("fc.bias", &[4], &w),
        ];
        let bytes = encode(&model(graph("g", vec![], inits, vec![], vec![])));
        let m = Model::from_bytes(bytes, "/nonexistent-smd-test/model.onnx").unwrap();
        let sel = Selection {
            include: Some(Regex::new("^fc").unwrap()),
            exclude: Some(Regex::new("bias").unwrap()),
            all_float: true,
        };
        let mu = sel.verdicts(&m);
        assert_eq!(mu[0].reason(), Some("not matched by --include"));
        assert!(mu[1].is_mutable());
        assert_eq!(mu[2].reason(), Some("excluded by --exclude"));
        assert_eq!(sel.mutable_tensors(&m), vec![1]);
    }

    #[test]
    fn descriptions_read_back() {
        let re = |r: &str| Some(Regex::new(r).unwrap());
        for sel in [
            Selection::default(),
            Selection {
                all_float: true,
                ..Default::default()
            },
            Selection {
                include: re("conv|fc"),
                ..Default::default()
            },
            Selection {
                exclude: re("^bias include= x$"),
                all_float: true,
                ..Default::default()
            },
            Selection {
                include: re(""),
                exclude: re("a exclude=b"),
                all_float: false,
            },
            Selection {
                include: re("a exclude=b"),
                exclude: re("c"),
                all_float: false,
            },
            Selection {
                include: re("a exclude=b"),
                ..Default::default()
            },
        ] {
            let text = sel.describe();
            // The rule is among the readings (the first one unless ambiguous).
            let all = Selection::readings(&text).unwrap();
            let pats = |s: &Selection| {
                let p = |r: &Option<Regex>| r.as_ref().map(|r| r.as_str().to_string());
                (p(&s.include), p(&s.exclude), s.all_float)
            };
            assert!(all.iter().any(|r| pats(r) == pats(&sel)), "{text}");
            assert!(all.iter().all(|r| r.describe() == text), "{text}");
            if all.len() > 1 {
                continue;
            }
            let back = Selection::from_description(&text).unwrap();
            assert_eq!(back.describe(), text);
            assert_eq!(back.all_float, sel.all_float);
            let pat = |r: &Option<Regex>| r.as_ref().map(|r| r.as_str().to_string());
            assert_eq!(pat(&back.include), pat(&sel.include), "{text}");
            assert_eq!(pat(&back.exclude), pat(&sel.exclude), "{text}");
        }
        assert_eq!(
            Selection {
                include: re("a"),
                exclude: re("b"),
                all_float: false
            }
            .describe(),
            "default include=a exclude=b"
        );
        let two = Selection::readings("default include=a exclude=b exclude=c").unwrap();
        assert_eq!(two.len(), 3);
        assert_eq!(two[0].include.as_ref().unwrap().as_str(), "a");
        assert_eq!(two[0].exclude.as_ref().unwrap().as_str(), "b exclude=c");
        assert!(two[2].exclude.is_none());
        // Readings whose pattern does not compile are left out.
        let one = Selection::readings("default include=( exclude=)").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].include.as_ref().unwrap().as_str(), "( exclude=)");
        for bad in [
            "",
            "all",
            "defaults",
            "default include",
            "default include=(",
            "all-float exclude=[",
        ] {
            let e = Selection::from_description(bad).unwrap_err().to_string();
            assert!(e.starts_with("selection ") && !e.contains('\n'), "{e}");
        }
    }
}
