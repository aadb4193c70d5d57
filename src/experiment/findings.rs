//! The paper's findings across depth (Sec. 4.2; Figures 1, 6 and 7), computed from a table's
//! finished runs, never typed: within each family (plain, ResNet) each depth against the next
//! shallower one and the deepest against the shallowest, by final test error and final training
//! error; each ResNet against the plain net of its depth; and Figure 7's reading (the mean over
//! layers of the response std) where the responses were measured. A finding is called reproduced
//! only when its sign is the paper's and, with two or more seeds a side, the 95% interval of the
//! difference (Welch's) excludes zero; with one seed a side it is a sign, and says so.

use super::config::Group;
use super::store::{Store, StoredRun};
use crate::eval::responses::ResponseRow;
use crate::fsutil::write_atomic;
use crate::models::NetSpec;
use crate::stats::{Interval, mean_std, welch_95};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::PathBuf;

/// What a finding compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// `final.json`'s test error (%): the last iteration's weights on the whole test set.
    TestError,
    /// `final.json`'s training error (%): the last logging window, augmented batches.
    TrainError,
    /// Figure 7: the mean over 3x3 layers of each layer's response std (over the seeds measured).
    ResponseStd,
}

impl Quantity {
    fn describe(self) -> &'static str {
        match self {
            Quantity::TestError => "final test error (%)",
            Quantity::TrainError => "final training error (%)",
            Quantity::ResponseStd => "mean response std (Fig. 7)",
        }
    }
}

/// The direction the paper gives the second network against the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Higher,
    Lower,
}

/// What the runs say of a finding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The paper's sign, and the difference's 95% interval excludes zero.
    Reproduced(Interval),
    /// The opposite sign, and the interval excludes zero.
    Opposite(Interval),
    /// The interval holds zero: the seeds' spread covers the difference.
    WithinSpread(Interval),
    /// One seed on a side: a sign, no effect established.
    OneSeed { as_paper: bool },
}

/// One network's values, one per seed (in seed order).
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    pub label: String,
    pub values: Vec<f64>,
}

/// The second network against the first (the shallower, or the plain net) on one quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub group: Group,
    pub quantity: Quantity,
    pub first: Side,
    pub second: Side,
    pub paper: Direction,
    pub verdict: Verdict,
}

impl Finding {
    fn new(group: Group, quantity: Quantity, first: Side, second: Side, paper: Direction) -> Self {
        let as_paper = |d: f64| match paper {
            Direction::Higher => d > 0.0,
            Direction::Lower => d < 0.0,
        };
        let verdict = match welch_95(&second.values, &first.values) {
            None => Verdict::OneSeed { as_paper: as_paper(mean(&second.values) - mean(&first.values)) },
            Some(i) if i.lo <= 0.0 && i.hi >= 0.0 => Verdict::WithinSpread(i),
            Some(i) if as_paper(i.diff) => Verdict::Reproduced(i),
            Some(i) => Verdict::Opposite(i),
        };
        Finding { group, quantity, first, second, paper, verdict }
    }

    /// Mean of the second minus mean of the first.
    pub fn diff(&self) -> f64 {
        mean(&self.second.values) - mean(&self.first.values)
    }
}

fn mean(v: &[f64]) -> f64 {
    mean_std(v).mean
}

/// A CIFAR-style network's finished seeds in one group.
struct Net {
    label: String,
    residual: bool,
    depth: usize,
    test: Vec<f64>,
    train: Vec<f64>,
}

/// Every finding the runs (and the measured responses) allow, per group.
pub fn findings(runs: &[StoredRun], responses: &[ResponseRow]) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    for group in runs.chunk_by(|a, b| a.config.group() == b.config.group()) {
        let g = group[0].config.group();
        let nets = finished_nets(group)?;
        for (quantity, pick) in [(Quantity::TestError, 0), (Quantity::TrainError, 1)] {
            let side = |n: &Net| Side {
                label: n.label.clone(),
                values: if pick == 0 { n.test.clone() } else { n.train.clone() },
            };
            for residual in [false, true] {
                let family: Vec<&Net> = nets.iter().filter(|n| n.residual == residual).collect();
                // The paper: deeper plain nets err more (Fig. 1, Fig. 6 left), deeper ResNets less.
                let paper = if residual { Direction::Lower } else { Direction::Higher };
                for (a, b) in depth_pairs(family.len()) {
                    out.push(Finding::new(g, quantity, side(family[a]), side(family[b]), paper));
                }
            }
            for r in nets.iter().filter(|n| n.residual) {
                if let Some(p) = nets.iter().find(|p| !p.residual && p.depth == r.depth) {
                    out.push(Finding::new(g, quantity, side(p), side(r), Direction::Lower));
                }
            }
        }
        // Only the responses of this store's finished runs (a responses.csv may hold other sweeps').
        let ours: Vec<ResponseRow> = responses
            .iter()
            .filter(|r| {
                group.iter().any(|run| {
                    run.config.net.name() == r.net && run.config.seed == r.seed && run.dir.is_finished()
                }) && r.group == g.to_string()
            })
            .cloned()
            .collect();
        out.extend(response_findings(g, &ours));
    }
    Ok(out)
}

/// The finished CIFAR networks of one group's runs (Table 6's: option A, up to 110 layers), by
/// family and depth, each with its seeds' test and training errors.
fn finished_nets(group: &[StoredRun]) -> Result<Vec<Net>> {
    let mut nets: Vec<Net> = Vec::new();
    for run in group {
        let NetSpec::Cifar(c) = &run.config.net else { continue };
        if run.config.net.named_option().is_some() || c.depth > 110 {
            continue;
        }
        let (Some(rec), label) = (run.dir.final_record()?, run.config.net.label()) else { continue };
        let Some(test) = rec.test_error else { continue };
        match nets.iter_mut().find(|n| n.label == label) {
            Some(n) => {
                n.test.push(test);
                n.train.push(rec.train_error);
            }
            None => nets.push(Net {
                label,
                residual: c.residual,
                depth: c.depth,
                test: vec![test],
                train: vec![rec.train_error],
            }),
        }
    }
    nets.sort_by_key(|n| (n.residual, n.depth));
    Ok(nets)
}

/// The pairs (shallower, deeper) of `n` depths in order: each with the next, and the first with
/// the last where that is not already a pair.
fn depth_pairs(n: usize) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(usize, usize)> = (1..n).map(|i| (i - 1, i)).collect();
    if n > 2 {
        pairs.push((0, n - 1));
    }
    pairs
}

/// Figure 7's reading on the measured responses of `group`: each ResNet responds less than the
/// plain net of its depth, and a deeper ResNet less than a shallower one.
fn response_findings(group: Group, rows: &[ResponseRow]) -> Vec<Finding> {
    let mut nets: Vec<(bool, usize, Side)> = Vec::new();
    for r in rows.iter().filter(|r| r.group == group.to_string()) {
        match nets.iter_mut().find(|(res, d, _)| (*res, *d) == (r.residual, r.depth)) {
            Some((_, _, side)) => side.values.push(r.std),
            None => {
                let label = format!("{}-{}", if r.residual { "ResNet" } else { "plain" }, r.depth);
                nets.push((r.residual, r.depth, Side { label, values: vec![r.std] }))
            }
        }
    }
    nets.sort_by_key(|(res, d, _)| (*res, *d));
    // One value per network: the mean over its layers.
    let per_net = |s: &Side| Side { label: s.label.clone(), values: vec![mean(&s.values)] };
    let mut out = Vec::new();
    let resnets: Vec<&(bool, usize, Side)> = nets.iter().filter(|n| n.0).collect();
    for (_, depth, r) in &resnets {
        if let Some((_, _, p)) = nets.iter().find(|(res, d, _)| !res && d == depth) {
            out.push(Finding::new(group, Quantity::ResponseStd, per_net(p), per_net(r), Direction::Lower));
        }
    }
    for (a, b) in depth_pairs(resnets.len()) {
        let (sa, sb) = (per_net(&resnets[a].2), per_net(&resnets[b].2));
        out.push(Finding::new(group, Quantity::ResponseStd, sa, sb, Direction::Lower));
    }
    out
}

/// What the findings are and how they are called.
pub const FINDINGS_RULE: &str = "Computed from the finished runs' files (final.json, and Figure 7's \
    responses where measured), not typed. Each row is the second network against the first: the \
    difference is the second's mean minus the first's. A finding is *reproduced* when its sign is the \
    paper's and, with two or more seeds on each side, the 95% interval of the difference (Welch's t) \
    excludes zero; with one seed on a side only the sign is known, and the row says so. Seeds are the \
    number of finished runs behind each side; values are mean±std (sample std) over them.";

/// The findings as Markdown, a table per group (nothing if there are none).
pub fn findings_markdown(findings: &[Finding]) -> String {
    let mut md = String::new();
    for group in findings.chunk_by(|a, b| a.group == b.group) {
        let _ = write!(
            md,
            "\n## {}\n\n| second vs first | measure | paper: second is | first | second | difference | seeds | \
             verdict |\n|---|---|---|---:|---:|---:|---:|---|\n",
            group[0].group
        );
        for f in group {
            let digits = if f.quantity == Quantity::ResponseStd { 3 } else { 2 };
            let paper = match f.paper {
                Direction::Higher => "higher",
                Direction::Lower => "lower",
            };
            let _ = writeln!(
                md,
                "| {} vs {} | {} | {paper} | {} | {} | {:+.digits$} | {} / {} | {} |",
                f.second.label,
                f.first.label,
                f.quantity.describe(),
                format_side(&f.first, digits),
                format_side(&f.second, digits),
                f.diff(),
                f.first.values.len(),
                f.second.values.len(),
                verdict_text(&f.verdict, digits),
            );
        }
    }
    md
}

fn format_side(s: &Side, digits: usize) -> String {
    let m = mean_std(&s.values);
    match s.values.len() {
        1 => format!("{:.digits$}", m.mean),
        _ => format!("{:.digits$}±{:.digits$}", m.mean, m.std),
    }
}

fn verdict_text(v: &Verdict, digits: usize) -> String {
    let interval = |i: &Interval| format!("95% interval {:+.digits$} .. {:+.digits$}", i.lo, i.hi);
    match v {
        Verdict::Reproduced(i) => format!("**reproduced** ({})", interval(i)),
        Verdict::Opposite(i) => format!("**the opposite of the paper's** ({})", interval(i)),
        Verdict::WithinSpread(i) => format!("not established: within the seeds' spread ({})", interval(i)),
        Verdict::OneSeed { as_paper: true } => "one seed: the paper's sign, not established".into(),
        Verdict::OneSeed { as_paper: false } => "one seed: against the paper's sign, not established".into(),
    }
}

/// Writes `findings.md` beside the store's summary from its runs and `responses`; returns its
/// path, or `None` (and writes nothing) where no finding can be computed yet.
pub fn write_findings(store: &Store, title: &str, responses: &[ResponseRow]) -> Result<Option<PathBuf>> {
    let all = findings(&store.runs()?, responses)?;
    if all.is_empty() {
        return Ok(None);
    }
    let md = format!("# {title}\n\n{FINDINGS_RULE}\n{}", findings_markdown(&all));
    let path = store.findings_md();
    write_atomic(&path, md.as_bytes())?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Shape;
    use crate::experiment::{Experiment, FinalRecord};

    /// A store with finished runs: (net, [(test error, training error) per seed]).
    fn store(dir: &std::path::Path, nets: &[(&str, &[(f64, f64)])]) -> Store {
        let text = "name = \"t\"\nseeds = [0]\n[data]\ndataset = \"fashion-mnist\"\n[train]\nbatch_size = 16\nlr = 0.1\nmilestones = [5]\niterations = 10\n\
                    log_every = 5\neval_every = 5\ncheckpoint_every = 5\n\
                    [[runs]]\ndepth = 20\nresidual = false\n[[runs]]\ndepth = 56\nresidual = false\n\
                    [[runs]]\ndepth = 20\nresidual = true\n[[runs]]\ndepth = 56\nresidual = true\n";
        let exp: Experiment = toml::from_str(text).unwrap();
        let configs = exp.resolve(Shape { classes: 10, channels: 1, size: 28 }).unwrap();
        let store = Store::new(dir);
        for (name, seeds) in nets {
            let cfg = configs.iter().find(|c| c.net.name() == *name).unwrap();
            for (seed, &(test, train)) in seeds.iter().enumerate() {
                let cfg = crate::experiment::RunConfig { seed: seed as u64, ..cfg.clone() };
                let dir = store.run(&cfg);
                dir.claim(&cfg).unwrap();
                let record = serde_json::json!({
                    "net": name, "depth": cfg.net.depth(), "residual": cfg.net.residual(),
                    "dataset": "fashion-mnist", "preset": "full", "seed": seed, "iterations": 10,
                    "test_error": test, "test_images": 100, "val_error": null, "train_error": train,
                    "seconds": 1.0, "device": "cpu", "torch": "2.11.0", "commit": "x",
                    "warmup_ended_at": null, "finished": "now"
                });
                dir.write_final(&serde_json::from_value::<FinalRecord>(record).unwrap()).unwrap();
            }
        }
        store
    }

    fn find<'a>(all: &'a [Finding], second: &str, first: &str, q: Quantity) -> &'a Finding {
        all.iter()
            .find(|f| f.second.label == second && f.first.label == first && f.quantity == q)
            .unwrap_or_else(|| panic!("no {second} vs {first} {q:?} in {all:#?}"))
    }

    #[test]
    fn a_finding_is_reproduced_only_with_seeds_whose_spread_it_exceeds_and_one_seed_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(
            dir.path(),
            &[
                ("plain20", &[(6.0, 2.0), (6.1, 2.2), (5.9, 1.9)]),
                ("plain56", &[(7.0, 3.0), (7.2, 3.1), (7.1, 2.9)]),
                ("resnet20", &[(5.6, 1.6), (5.0, 1.5), (6.2, 1.7)]),
                ("resnet56", &[(5.4, 1.9)]),
            ],
        );
        let all = findings(&s.runs().unwrap(), &[]).unwrap();
        // Within each family 20 against 56 (the only pair), both measures; each ResNet against
        // the plain net of its depth: 2 + 2 + 2 * 2.
        assert_eq!(all.len(), 8, "{all:#?}");
        let f = find(&all, "plain-56", "plain-20", Quantity::TestError);
        assert!((f.diff() - 1.1).abs() < 1e-9);
        assert_eq!(f.paper, Direction::Higher);
        assert!(matches!(f.verdict, Verdict::Reproduced(i) if i.lo > 0.0), "{f:?}");
        let f = find(&all, "ResNet-20", "plain-20", Quantity::TestError);
        assert!(matches!(f.verdict, Verdict::WithinSpread(i) if i.lo < 0.0 && i.hi > 0.0), "{f:?}");
        let f = find(&all, "ResNet-20", "plain-20", Quantity::TrainError);
        assert!(matches!(f.verdict, Verdict::Reproduced(_)), "{f:?}");
        let f = find(&all, "ResNet-56", "ResNet-20", Quantity::TrainError);
        assert_eq!(f.verdict, Verdict::OneSeed { as_paper: false }, "deeper, and higher: {f:?}");
        let f = find(&all, "ResNet-56", "plain-56", Quantity::TestError);
        assert_eq!(f.verdict, Verdict::OneSeed { as_paper: true });
        let md = findings_markdown(&all);
        assert!(md.contains("| plain-56 vs plain-20 | final test error (%) | higher | 6.00±0.10 | 7.10±0.10 | +1.10 | 3 / 3 | **reproduced** (95% interval "), "{md}");
        assert!(md.contains("| ResNet-56 vs ResNet-20 | final training error (%) | lower | 1.60±0.10 | 1.90 | +0.30 | 3 / 1 | one seed: against the paper's sign, not established |"), "{md}");
    }

    #[test]
    fn the_opposite_sign_beyond_the_spread_is_said_and_figure_7s_reading_is_computed() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(
            dir.path(),
            &[
                ("resnet20", &[(6.0, 2.0), (6.1, 2.1)]),
                ("resnet56", &[(7.0, 1.0), (7.1, 1.1)]),
                ("plain20", &[(6.0, 2.0)]),
            ],
        );
        let row = |net: &str, residual: bool, depth: usize, layer: usize, std: f64| ResponseRow {
            group: "fashion-mnist".into(),
            net: net.into(),
            depth,
            residual,
            seed: 0,
            layer,
            std,
            images: 100,
        };
        let responses = [
            row("plain20", false, 20, 1, 1.0),
            row("plain20", false, 20, 2, 3.0),
            row("resnet20", true, 20, 1, 0.5),
            row("resnet20", true, 20, 2, 1.5),
            row("resnet56", true, 56, 1, 1.2),
            // Another sweep's network in the same responses.csv: not this store's, left out.
            row("resnet32", true, 32, 1, 9.0),
        ];
        let all = findings(&s.runs().unwrap(), &responses).unwrap();
        let f = find(&all, "ResNet-56", "ResNet-20", Quantity::TestError);
        assert!(matches!(f.verdict, Verdict::Opposite(i) if i.lo > 0.0), "{f:?}");
        let f = find(&all, "ResNet-20", "plain-20", Quantity::ResponseStd);
        assert_eq!((f.first.values.clone(), f.second.values.clone()), (vec![2.0], vec![1.0]));
        assert_eq!(f.verdict, Verdict::OneSeed { as_paper: true });
        let f = find(&all, "ResNet-56", "ResNet-20", Quantity::ResponseStd);
        assert_eq!(f.verdict, Verdict::OneSeed { as_paper: false });
        assert!(
            all.iter().all(|f| f.first.label != "ResNet-32" && f.second.label != "ResNet-32"),
            "{all:#?}"
        );
        assert!(findings_markdown(&all).contains("**the opposite of the paper's**"));
    }

    #[test]
    fn depths_are_compared_each_with_the_next_and_the_first_with_the_last() {
        assert_eq!(depth_pairs(1), []);
        assert_eq!(depth_pairs(2), [(0, 1)]);
        assert_eq!(depth_pairs(4), [(0, 1), (1, 2), (2, 3), (0, 3)]);
    }
}
