//! Kernels compiled twice: for the baseline target and, on x86-64, for AVX2 (chosen at run
//! time).
//!
//! The kernels use only IEEE add/mul/div/sqrt and integer ops; AVX2 does not imply FMA and
//! Rust never contracts, so both builds give bit-identical results: only the vector width
//! differs.

/// Defines `$name`, whose body runs compiled for AVX2 where the CPU supports it, and
/// `$portable`, the same body for the baseline target (what `$name` runs elsewhere; tests
/// compare the two). The body is duplicated into an inner `#[target_feature]` function: a
/// closure passed to one would not reliably inherit the feature.
macro_rules! multiversion {
    (
        $(#[$m:meta])*
        fn $name:ident / $portable:ident $(<const $c:ident: $ct:ty>)? ($($a:ident: $t:ty),* $(,)?)
        $body:block
    ) => {
        $(#[$m])*
        fn $name $(<const $c: $ct>)? ($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2 $(<const $c: $ct>)? ($($a: $t),*) $body
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2 $(::<$c>)? ($($a),*) };
                }
            }
            $portable $(::<$c>)? ($($a),*)
        }

        $(#[$m])*
        fn $portable $(<const $c: $ct>)? ($($a: $t),*) $body
    };
}

pub(crate) use multiversion;
