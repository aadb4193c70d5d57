//! The README's status table: each of the paper's tables and figures, the command that
//! reproduces it, our number beside the paper's, and how far it got here, all read from the
//! committed release (`results/`, [`Release`]), never typed by hand. `make results` writes it
//! between the README's status markers; a test checks the README holds what it would write.

use crate::eval::responses::{ResponseRow, fig7_position, read_responses};
use crate::experiment::findings::{Quantity, findings};
use crate::experiment::{Release, Runs, StoredRun};
use crate::models::NetSpec;
use crate::paper::{Measure, published};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::Path;

/// The README's lines around the table (the table between them is regenerated).
pub const BEGIN: &str = "<!-- status: written by `make results` from results/; do not edit by hand -->";
pub const END: &str = "<!-- status: end -->";

/// The release's Figure 6-style curves, shown under the table (relative to the repository).
pub const FIGURE: &str = "results/table6/fig6_fashion-mnist.png";

/// The status table as Markdown, from the release at `results` (with its figure, if released).
pub fn table(results: &Path) -> Result<String> {
    let release = Release::new(results);
    let table6 = release.table("table6").runs()?;
    let pending = release.in_progress("table6").runs()?;
    let mut md = String::from("| Paper | Command | Ours | Paper's | State |\n|---|---|---|---|---|\n");
    md.push_str(&table1_row(&results.join("table1/table1.csv"))?);
    md.push_str(
        "| Table 2, Fig. 4: plain vs ResNet-18/34, ImageNet | `make reproduce-table2` | none | 27.94 / 28.54 / \
         27.88 / 25.03 (10-crop top-1) | not run here (needs ImageNet) |\n",
    );
    md.push_str(
        "| Tables 3-4: shortcuts A/B/C, ResNet-50/101/152 | `make reproduce-table3` | none | ResNet-50 22.85 \
         (10-crop), 20.74 (multi-scale) | not run here (needs ImageNet) |\n",
    );
    let (mut not_run, mut resnets) = (Vec::new(), Vec::new());
    for depth in [20, 32, 44, 56, 110] {
        for residual in [false, true] {
            match table6_row(depth, residual, &table6, &pending)? {
                Some(row) => md.push_str(&row),
                None if residual => {
                    not_run.push(format!("ResNet-{depth}"));
                    resnets.push(depth);
                }
                None => not_run.push(format!("plain-{depth}")),
            }
        }
    }
    if !not_run.is_empty() {
        writeln!(
            md,
            "| Table 6: {} | `make release-runs` | none | {} | not trained yet (in `make release-runs`' queue) |",
            not_run.join(", "),
            paper_range(&resnets)
        )?;
    }
    md.push_str(&figure_row("Fig. 1: plain-20 vs plain-56", &["plain20", "plain56"], &table6, &pending));
    md.push_str(&figure_row("Fig. 6: plain and ResNet curves", &["plain20", "resnet20"], &table6, &pending));
    md.push_str(&fig7_row(&table6, &read_responses(&Runs::new(results).responses_csv())?)?);
    md.push_str(&detection_row(&release)?);
    // Said here once: the pages under docs/ point at this row.
    md.push_str(
        "| On a GPU: the CUDA-graph step, NCCL data-parallel, bf16 | `scripts/gpu-check` | none | the paper: 8 GPUs \
         (ImageNet), 2 (CIFAR) | not yet run on a GPU (compiled; the CPU side tested) |\n",
    );
    let findings = release.table("table6").findings_md();
    if findings.is_file() {
        let rel = findings.strip_prefix(results.parent().unwrap_or(results)).unwrap_or(&findings);
        writeln!(
            md,
            "\nThe paper's findings across depth, computed from these runs (seeds, spread, verdicts): \
             [{0}]({0}).",
            rel.display()
        )?;
    }
    if results.join("table6/fig6_fashion-mnist.png").is_file() {
        writeln!(
            md,
            "\n![Fashion-MNIST, the paper's full CIFAR schedule: dashed training error, bold test error]({FIGURE})"
        )?;
    }
    Ok(md)
}

/// Tables 7-8's rows: the full-size commands (not run here), and the small-scale experiment's
/// mean mAP@.5 per backbone and init as released (results/detect_scenes/).
fn detection_row(release: &Release) -> Result<String> {
    use crate::experiment::detect_scenes::records;
    let paper = crate::paper::DETECTION;
    let mut md = format!(
        "| Tables 7-8: Faster R-CNN on VOC, COCO | `make reproduce-table7`, `make reproduce-table8` | none | VOC07 \
         {:.1} -> {:.1} mAP, COCO {:.1} -> {:.1} mAP@[.5,.95] (VGG-16 -> ResNet-101) | not run here (needs VOC, COCO \
         and a GPU; tested on generated folders) |\n",
        paper[0].vgg16, paper[0].resnet101, paper[3].vgg16, paper[3].resnet101
    );
    let recs = records(&release.table(crate::experiment::Table::DetectScenes.dir_name()))?;
    let command = "`make reproduce-detect-scenes`";
    let claim = "ResNet better than plain; pre-trained better";
    if recs.is_empty() {
        writeln!(
            md,
            "| Tables 7-8 at small scale: Fashion-MNIST scenes | {command} | none | {claim} | not released |"
        )?;
        return Ok(md);
    }
    let mut groups: Vec<(String, Vec<f64>)> = Vec::new();
    for r in &recs {
        let key = format!("{}-{}", r.net, r.init);
        let v = 100.0 * r.scores.ap50.unwrap_or(f64::NAN);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, xs)) => xs.push(v),
            None => groups.push((key, vec![v])),
        }
    }
    let ours: Vec<String> =
        groups.iter().map(|(k, xs)| format!("{k} {:.1}", crate::stats::mean_std(xs).mean)).collect();
    writeln!(
        md,
        "| Tables 7-8 at small scale: Fashion-MNIST scenes | {command} | mAP@.5 (mean of {} seeds): {} | {claim} | \
         {} iterations a run on this CPU ([summary](results/detect_scenes/summary.md)) |",
        groups.iter().map(|(_, xs)| xs.len()).min().unwrap_or(0),
        ours.join(", "),
        recs[0].iterations
    )?;
    Ok(md)
}

/// The paper's CIFAR-10 test errors of the ResNets of these depths, as a range.
fn paper_range(depths: &[usize]) -> String {
    let err = |d: usize| {
        published(&NetSpec::Cifar(crate::models::CifarNet::resnet(d)), Measure::Test).map(|p| p.top1)
    };
    let known: Vec<(usize, f64)> = depths.iter().filter_map(|&d| err(d).map(|e| (d, e))).collect();
    match known[..] {
        [] => "curves in Fig. 6".into(),
        [(a, x)] => format!("ResNet-{a}: {x:.2} (CIFAR-10)"),
        [(a, x), .., (b, y)] => format!("ResNet-{a}..{b}: {x:.2} .. {y:.2} (CIFAR-10)"),
    }
}

/// Table 1's row: the largest difference of the computed multiply-adds from the paper's.
fn table1_row(csv_path: &Path) -> Result<String> {
    if !csv_path.is_file() {
        return Ok(
            "| Table 1: parameters, FLOPs | `make reproduce-table1` | none | 3.6e9 (ResNet-34) ... | not \
                   released |\n"
                .into(),
        );
    }
    let mut reader =
        csv::Reader::from_path(csv_path).with_context(|| format!("reading {}", csv_path.display()))?;
    let mut worst: Option<(f64, String)> = None;
    let (mut counted, mut compared) = (0, 0);
    for row in reader.deserialize::<std::collections::HashMap<String, String>>() {
        let row = row.with_context(|| format!("reading {}", csv_path.display()))?;
        counted += 1;
        let Some(d) = row.get("mult_adds_diff_pct").and_then(|d| d.parse::<f64>().ok()) else { continue };
        compared += 1;
        if worst.as_ref().is_none_or(|(w, _)| d.abs() > w.abs()) {
            worst = Some((d, row.get("model").cloned().unwrap_or_default()));
        }
    }
    let Some((d, model)) = worst else { bail!("{}: no network compared with the paper", csv_path.display()) };
    Ok(format!(
        "| Table 1: parameters, FLOPs | `make reproduce-table1` | {counted} nets counted, {compared} \
         compared with the paper's FLOPs, within {:.1}% ({model}) | \
         1.8e9 .. 11.3e9 mult-adds | reproduced (computed, no training) |\n",
        d.abs()
    ))
}

/// One Table 6 network's row: its released test error or how far its run got; `None` if neither.
fn table6_row(
    depth: usize,
    residual: bool,
    released: &[StoredRun],
    pending: &[StoredRun],
) -> Result<Option<String>> {
    let net = crate::models::CifarNet { residual, ..crate::models::CifarNet::resnet(depth) };
    let name = NetSpec::Cifar(net.clone()).name();
    let label = format!("{}-{depth}", if residual { "ResNet" } else { "plain" });
    let paper = match published(&NetSpec::Cifar(net), Measure::Test) {
        Some(p) => format!("{:.2} (CIFAR-10)", p.top1),
        None => "a curve in Fig. 6".into(),
    };
    let command = "`make release-runs`";
    let done: Vec<&StoredRun> = released.iter().filter(|r| r.config.net.name() == name).collect();
    if let Some(run) = done.first() {
        let f = run.dir.final_record()?.context("a released run without final.json")?;
        let err = f.test_error.context("a released run without a test error")?;
        let data = run.config.data.dataset().pretty();
        return Ok(Some(format!(
            "| Table 6: {label} | {command} | {err:.2} ({data}, {} iterations, {}, {:.1} h) | {paper} | {data} \
             stand-in, full schedule |\n",
            f.iterations,
            f.precision,
            f.seconds / 3600.0,
        )));
    }
    let Some(run) = pending.iter().find(|r| r.config.net.name() == name) else { return Ok(None) };
    let it = crate::train::checkpoint::list(&run.dir.path)?.pop().map_or(0, |(i, _)| i);
    let last = run
        .dir
        .metrics()?
        .into_iter()
        .rev()
        .filter(|m| m.iteration <= it)
        .find_map(|m| m.test_error.map(|e| (m.iteration, e)));
    let ours = last.map_or("training".into(), |(i, e)| format!("training: {e:.2} at iteration {i}"));
    Ok(Some(format!(
        "| Table 6: {label} | {command} | {ours} | {paper} | {} stand-in, full schedule, {}: iteration {it} of {} |\n",
        run.config.data.dataset().pretty(),
        run.config.train.precision,
        run.config.train.iterations
    )))
}

/// A figure's row: which of its curves are released, or being trained.
fn figure_row(what: &str, nets: &[&str], released: &[StoredRun], pending: &[StoredRun]) -> String {
    let among = |runs: &[StoredRun]| -> Vec<&str> {
        nets.iter().copied().filter(|n| runs.iter().any(|r| r.config.net.name() == *n)).collect()
    };
    let (have, training) = (among(released), among(pending));
    let state = match (have.len(), training.len()) {
        (k, _) if k == nets.len() => "Fashion-MNIST stand-in, full schedule (the figure below)".to_string(),
        (0, 0) => "not run here on the full schedule".to_string(),
        (0, _) => format!("{} training (Fashion-MNIST, full schedule)", training.join(", ")),
        _ => format!("{} only (Fashion-MNIST, full schedule)", have.join(", ")),
    };
    format!("| {what} | `make reproduce-table6` | curves | curves | {state} |\n")
}

/// Figure 7's row: the released networks whose responses were measured, and the paper's reading
/// of them (ResNets respond less than plain nets, deeper ResNets less still) as they show it.
fn fig7_row(released: &[StoredRun], rows: &[ResponseRow]) -> Result<String> {
    if rows.is_empty() {
        return Ok(
            "| Fig. 7: layer responses | `make reproduce-fig7` | none | ResNets respond less | not run \
                   here on the full schedule |\n"
                .into(),
        );
    }
    let mut nets: Vec<(Option<usize>, bool, usize)> =
        rows.iter().map(|r| (fig7_position(r.residual, r.depth), r.residual, r.depth)).collect();
    nets.sort();
    nets.dedup();
    let labels: Vec<String> = nets
        .iter()
        .map(|(_, residual, depth)| format!("{}-{depth}", if *residual { "ResNet" } else { "plain" }))
        .collect();
    let readings: Vec<String> = findings(released, rows)?
        .iter()
        .filter(|f| f.quantity == Quantity::ResponseStd)
        .map(|f| {
            // The paper: the second responds less (Direction::Lower for every Figure 7 finding).
            let (mark, sign) =
                if f.diff() < 0.0 { ("<", "the paper's sign") } else { (">=", "against the paper's") };
            format!("{} {mark} {}: {sign}", f.second.label, f.first.label)
        })
        .collect();
    let state = match readings.is_empty() {
        true => "measured; no pair to compare yet".to_string(),
        false => format!("{}; one network each", readings.join(", ")),
    };
    Ok(format!(
        "| Fig. 7: layer responses | `make results` | {} measured (released weights, test set) | ResNets respond \
         less | {state} |\n",
        labels.join(", ")
    ))
}

/// `text` (the README) with the table between [`BEGIN`] and [`END`] replaced by `table`.
pub fn splice(text: &str, table: &str) -> Result<String> {
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("the README has no status markers ({BEGIN} ... {END})")
    };
    anyhow::ensure!(b < e, "the README's status markers are out of order");
    Ok(format!("{}{BEGIN}\n{table}{}", &text[..b], &text[e..]))
}

#[cfg(test)]
mod tests {
    use super::{paper_range, table1_row};

    #[test]
    fn table1s_row_counts_every_net_and_compares_those_the_paper_gives() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("table1.csv");
        let rows =
            "model,mult_adds_diff_pct\nplain18,-0.29\nresnet34-B,1.78\nresnet34-C,\nresnet152-B,-0.16\n";
        std::fs::write(&csv, rows).unwrap();
        let row = table1_row(&csv).unwrap();
        assert!(
            row.contains("| 4 nets counted, 3 compared with the paper's FLOPs, within 1.8% (resnet34-B) |"),
            "{row}"
        );
    }

    #[test]
    fn the_not_run_rows_paper_column_covers_only_the_resnets_not_run() {
        assert_eq!(paper_range(&[32, 44, 56, 110]), "ResNet-32..110: 7.51 .. 6.43 (CIFAR-10)");
        assert_eq!(paper_range(&[44, 56, 110]), "ResNet-44..110: 7.17 .. 6.43 (CIFAR-10)");
        assert_eq!(paper_range(&[110]), "ResNet-110: 6.43 (CIFAR-10)");
        assert_eq!(paper_range(&[]), "curves in Fig. 6");
    }
}
