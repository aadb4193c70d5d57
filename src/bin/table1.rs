//! Table 1: parameters and multiply-adds of every network, beside the paper's figures.
//! Writes `<out>/table1.csv` and `<out>/table1.md` and prints the table.

use anyhow::{Context, Result};
use clap::Parser;
use resnet_repro::experiment::table1::{markdown, table1_rows, table1_specs, write_csv};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Counts the parameters and multiply-adds of the paper's ImageNet and CIFAR networks (Table 1,
/// Sec. 4.2) from the built networks and prints them beside the paper's figures.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Output folder for table1.csv and table1.md.
    #[arg(long, default_value = "runs/table1")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    // Progress only on a terminal; ResNet-152 and ResNet-1202 take a moment to build.
    let tty = std::io::stderr().is_terminal();
    let rows = table1_rows(&table1_specs(), |name| {
        if tty {
            eprint!("\rbuilding {name:<24}")
        }
    })?;
    if tty {
        eprint!("\r{:<40}\r", "");
    }
    let md = markdown(&rows);
    let csv_path = args.out.join("table1.csv");
    let md_path = args.out.join("table1.md");
    write_csv(&rows, &csv_path)?;
    let header = "# Table 1: network complexity\n\nParameters counted from each built network's \
                  variables (BN gamma/beta and fc bias included); multiply-adds of every conv and the fc \
                  layer for one image. `diff` compares with the paper's figure, which it prints rounded \
                  (3.664e9 as 3.6e9).\n\n";
    std::fs::write(&md_path, format!("{header}{md}"))
        .with_context(|| format!("writing {}", md_path.display()))?;
    println!("{md}");
    let compared: Vec<f64> = rows.iter().filter_map(|r| r.mult_adds_diff_pct).collect();
    let worst = compared.iter().fold(0f64, |a, d| a.max(d.abs()));
    println!(
        "{} networks; {} compared with the paper's FLOPs, largest difference {worst:.1}%",
        rows.len(),
        compared.len()
    );
    println!("wrote {} and {}", csv_path.display(), md_path.display());
    Ok(())
}
