//! Helpers shared by the bench binaries (a folder, so cargo does not take
//! it for a bench of its own).

/// The median of some samples (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
