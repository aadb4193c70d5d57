//! Prints what libtorch this build runs on and what it can use; `--selftest` checks it works.

use clap::Parser;
use resnet_repro::env::TorchInfo;

/// Prints the torch version, where libtorch was found, CUDA and cuDNN availability, device count,
/// the CPU and its bf16 support, and thread counts. Run it first on a new machine.
///
/// --selftest then runs the checks a first run needs, a PASS, FAIL or SKIP line each, in about a
/// minute, and exits with 1 if any failed: bf16 autocast; the fused SGD update against the
/// multi-tensor one; the CUDA-graph step's program run without a graph against eager steps; a
/// one-rank process group (Gloo on the CPU, NCCL on a GPU); and on a GPU, 20 steps captured as a
/// CUDA graph against 20 eager steps, and a capture forced to fail that must fall back and leave
/// random numbers and a new capture working.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Run the self-test after printing what was found.
    #[arg(long)]
    selftest: bool,
    /// Where the self-test runs: auto (the first GPU if any, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    println!("{}", TorchInfo::current());
    if !args.selftest {
        return std::process::ExitCode::SUCCESS;
    }
    // Parsed only now: `auto` stops where a driver answers and libtorch sees no GPU, which the
    // lines above have just explained.
    let device = match resnet_repro::env::parse_device(&args.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("\nself-test on {}:", resnet_repro::env::device_name(device));
    let checks = resnet_repro::selftest::run(device, |c| println!("{c}"));
    let failed = checks.iter().filter(|c| c.outcome.is_err()).count();
    let skipped =
        checks.iter().filter(|c| matches!(c.outcome, Ok(resnet_repro::selftest::Outcome::Skip(_)))).count();
    println!("self-test: {} passed, {failed} failed, {skipped} skipped", checks.len() - failed - skipped);
    if failed > 0 { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}
