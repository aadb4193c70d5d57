//! The statistics the summaries and the cross-check report: mean and sample std, and Welch's
//! 95% interval for a difference of means (Student's t with the Welch-Satterthwaite degrees of
//! freedom, its quantile from statrs).

/// A mean and a sample standard deviation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

/// Mean and sample standard deviation (n - 1; 0 for one value).
pub fn mean_std(xs: &[f64]) -> MeanStd {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    MeanStd { mean, std: var.sqrt() }
}

/// A difference of means and its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
}

/// mean(a) - mean(b) and its 95% interval by Welch's t (unequal variances); `None` with fewer
/// than two values on a side.
pub fn welch_95(a: &[f64], b: &[f64]) -> Option<Interval> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (MeanStd { mean: ma, std: sa }, MeanStd { mean: mb, std: sb }) = (mean_std(a), mean_std(b));
    let (va, vb) = (sa * sa / a.len() as f64, sb * sb / b.len() as f64);
    let se = (va + vb).sqrt();
    let diff = ma - mb;
    if se == 0.0 {
        return Some(Interval { diff, lo: diff, hi: diff });
    }
    let df = (va + vb).powi(2) / (va * va / (a.len() - 1) as f64 + vb * vb / (b.len() - 1) as f64);
    let t = t_quantile(0.975, df);
    Some(Interval { diff, lo: diff - t * se, hi: diff + t * se })
}

/// The `p` quantile of Student's t with `df` degrees of freedom (statrs's).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    StudentsT::new(0.0, 1.0, df).expect("positive degrees of freedom").inverse_cdf(p)
}
