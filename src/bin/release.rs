//! Releases finished runs into results/ (committed) with a MANIFEST of sha256s, keeps unfinished
//! runs' newest checkpoints there between sessions, and checks a release: `make release-runs`,
//! `make results` and the release test use it.

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};
use resnet_repro::experiment::summary::write_summary;
use resnet_repro::experiment::table1::{table1_rows, table1_specs, write_csv};
use resnet_repro::experiment::{Release, Store};
use resnet_repro::report::render_store;
use resnet_repro::report::status::{splice, table as table_md};
use std::path::PathBuf;

/// Moves results between a scratch runs folder (`--runs`, e.g. runs/release) and the committed
/// release (`--results`, results/): a table's released runs are results/<table>/<dataset>/<net>/
/// seed<k>/ (config.toml, metrics.csv, final.json, model.safetensors, class_index.csv,
/// data_mean.safetensors), its unfinished runs' newest checkpoints results/<table>/in-progress/...,
/// every released run file in results/MANIFEST.
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
    /// results/<table>/in-progress/ (commit it before a session ends).
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
    /// Write what the release shows from its files alone: the table's summary and figures
    /// (results/<table>/), Table 1's counts (results/table1/), and the status table in --readme
    /// between its markers (`make results`). --check compares instead of writing.
    Status {
        #[arg(long, default_value = "README.md")]
        readme: PathBuf,
        #[arg(long)]
        check: bool,
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
            let released = release.publish(&runs, &args.table, &command)?;
            for r in &released {
                println!("released {}", r.dir.path.display());
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
        What::Status { readme, check } => status(&release, &args.table, &readme, check)?,
    }
    Ok(())
}

/// The summary, figures and Table 1 under the release, then the README's status table.
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
