//! Releases finished runs into results/ (committed) with a MANIFEST of sha256s, keeps unfinished
//! runs' newest checkpoints there between work trees, and checks a release: `make release-runs`,
//! `make release-snapshot`, `make results` and the release test use it.

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};
use resnet_repro::data::DataOptions;
use resnet_repro::eval::responses::{fig7_position, read_responses};
use resnet_repro::experiment::detect_scenes::{records, write_summary as detection_summary};
use resnet_repro::experiment::figure7::measure_store;
use resnet_repro::experiment::summary::write_summary;
use resnet_repro::experiment::table1::{table1_rows, table1_specs, write_csv};
use resnet_repro::experiment::{Release, Store, Table};
use resnet_repro::report::status::{splice, table as table_md};
use resnet_repro::report::{render_fig7, render_store};
use std::path::PathBuf;

/// Moves results between a scratch runs folder (`--runs`, e.g. runs/release) and the committed
/// release (`--results`, results/): a table's released runs are results/<table>/<dataset>/<net>/
/// seed<k>/ (config.toml, metrics.csv, final.json, model.safetensors, class_index.csv,
/// data_mean.safetensors), its unfinished runs' newest checkpoints results/<table>/in-progress/...,
/// every released run file in results/MANIFEST. `--table detect_scenes`: the detection runs of
/// `detect_scenes` (results/detect_scenes/<net>-<init>/seed<k>/).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The released results.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// The table they belong to (a folder under --results).
    #[arg(long, default_value = "table6")]
    table: String,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Copy every finished run of --runs into the release, list its files in MANIFEST (with the
    /// commit from its final.json and --command), and drop its in-progress snapshot.
    Publish {
        #[arg(long)]
        runs: PathBuf,
        /// The command that trained them, for the manifest.
        #[arg(long)]
        command: String,
    },
    /// Copy every unfinished run's configuration, metrics and newest checkpoint into
    /// results/<table>/in-progress/ (commit it before the work tree goes).
    Snapshot {
        #[arg(long)]
        runs: PathBuf,
    },
    /// Copy the released runs into --runs where it has no finished copy (the training command
    /// skips them, and `publish` leaves them as released), and the in-progress runs where it has
    /// none of them or an older checkpoint, so that the same training command resumes them.
    Restore {
        #[arg(long)]
        runs: PathBuf,
    },
    /// Check every file MANIFEST lists against its size and sha256.
    Check,
    /// Write what the release shows: the detection runs' summary (results/detect_scenes/), Figure 7's layer responses of the released networks that
    /// results/fig7/responses.csv lacks (measured on their test set, no training; the data from
    /// --data-dir or Debian's dataset package), then from the files alone the table's summary,
    /// findings and figures (results/<table>/, results/fig7/), Table 1's counts
    /// (results/table1/), and the status table in --readme between its markers (`make results`).
    /// --check compares the status table instead of writing anything.
    Status {
        #[arg(long, default_value = "README.md")]
        readme: PathBuf,
        #[arg(long)]
        check: bool,
        /// Where the released runs' dataset is looked for (as the training command's --data-dir).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let release = Release::new(&args.results);
    match args.what {
        What::Publish { runs, command } => {
            let runs = Store::new(runs);
            ensure!(runs.root.is_dir(), "{}: no runs folder", runs.root.display());
            let released: Vec<PathBuf> = if args.table == Table::DetectScenes.dir_name() {
                release.publish_detection(&runs, &args.table, &command)?
            } else {
                release.publish(&runs, &args.table, &command)?.into_iter().map(|r| r.dir.path).collect()
            };
            for r in &released {
                println!("released {}", r.display());
            }
            if released.is_empty() {
                println!("no newly finished run in {}", runs.root.display());
            }
        }
        What::Snapshot { runs } => {
            for (dir, it) in release.snapshot(&Store::new(runs), &args.table)? {
                println!("kept {} (checkpoint at iteration {it})", dir.path.display());
            }
        }
        What::Restore { runs } => {
            let runs = Store::new(runs);
            for dir in release.restore_released(&runs, &args.table)? {
                println!("restored {} (released: finished, not trained again)", dir.path.display());
            }
            for (dir, it) in release.restore(&runs, &args.table)? {
                println!("restored {} (resumes from iteration {it})", dir.path.display());
            }
        }
        What::Check => {
            println!("{}: {} files as listed", release.manifest_path().display(), release.check()?)
        }
        What::Status { readme, check, data_dir } => {
            if !check {
                figure7(&release, &args.table, &data_dir)?;
            }
            status(&release, &args.table, &readme, check)?
        }
    }
    Ok(())
}

/// Figure 7 of the released networks: the responses results/fig7/responses.csv lacks, measured
/// on their test set (an error if their data is not found), then the figure.
fn figure7(release: &Release, table: &str, data_dir: &std::path::Path) -> Result<()> {
    let store = release.table(table);
    let csv = store.responses_csv();
    let mut rows = read_responses(&csv)?;
    let data = DataOptions { allow_download: false, ..DataOptions::new(data_dir) };
    let new = measure_store(&store, &rows, &data, tch::Device::Cpu, 500)
        .context("Figure 7: measuring the released networks' layer responses")?;
    let dir = csv.parent().context("a folder for responses.csv")?;
    if !new.is_empty() {
        rows.extend(new);
        rows.sort_by_key(|r| (r.group.clone(), fig7_position(r.residual, r.depth), r.seed, r.layer));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        resnet_repro::fsutil::write_csv(&csv, &rows)?;
        println!("wrote {}", csv.display());
    }
    for f in render_fig7(&csv, dir)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// The summary, findings, figures and Table 1 under the release, then the README's status table.
fn status(release: &Release, table: &str, readme: &std::path::Path, check: bool) -> Result<()> {
    let text = std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    if !check {
        let store = release.table(table);
        if !store.runs()?.is_empty() {
            write_summary(&store, "Table 6 on Fashion-MNIST: the paper's full CIFAR schedule")?;
            for f in render_store(&store, &store.root)? {
                println!("wrote {}", f.display());
            }
        }
        let scenes = release.table(Table::DetectScenes.dir_name());
        let records = records(&scenes)?;
        if !records.is_empty() {
            for f in detection_summary(&scenes, &records)? {
                println!("wrote {}", f.display());
            }
        }
        let t1 = release.root.join("table1");
        std::fs::create_dir_all(&t1).with_context(|| format!("creating {}", t1.display()))?;
        write_csv(&table1_rows(&table1_specs(), |_| {})?, &t1.join("table1.csv"))?;
    }
    let new = splice(&text, &table_md(&release.root)?)?;
    if check {
        ensure!(
            new == text,
            "{}: its status table is not what results/ holds: run `make results`",
            readme.display()
        );
        println!("{}: the status table is results/'s", readme.display());
    } else if new != text {
        resnet_repro::fsutil::write_atomic(readme, new.as_bytes())?;
        println!("wrote the status table in {}", readme.display());
    }
    Ok(())
}
