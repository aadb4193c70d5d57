//! Stopping on request: SIGINT (Ctrl-C), SIGTERM (a scheduler's stop) and SIGUSR1 (SLURM's warning
//! before a kill, `--signal=USR1@90`) ask the trainer to finish its current step, checkpoint that
//! iteration and exit with [`EXIT_INTERRUPTED`]; the run resumes from there, bit-identical on the
//! CPU. A second signal exits at once with 128 + its number: every file is written atomically, so
//! nothing is left half-written, and the last checkpoint stays the resume point.

use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The exit status of an interrupted run: "interrupted, resumable" (sysexits' EX_TEMPFAIL, the
/// status schedulers and shell loops can test for a requeue).
pub const EXIT_INTERRUPTED: u8 = 75;

const SIGNALS: [(i32, &str); 3] =
    [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM"), (libc::SIGUSR1, "SIGUSR1")];

struct Flags {
    stop: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the handlers (once; later calls do nothing). Also ignores SIGXFSZ, so that a write past
/// a file-size limit fails with an error naming the file instead of killing the process.
pub fn install() -> Result<()> {
    if FLAGS.get().is_some() {
        return Ok(());
    }
    let flags = Flags { stop: Arc::new(AtomicBool::new(false)), which: Arc::new(AtomicUsize::new(0)) };
    for (sig, _) in SIGNALS {
        // In registration order: exit at once if a signal came before, else remember this one.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&flags.stop))?;
        signal_hook::flag::register_usize(sig, Arc::clone(&flags.which), sig as usize)?;
        signal_hook::flag::register(sig, Arc::clone(&flags.stop))?;
    }
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let _ = FLAGS.set(flags);
    Ok(())
}

/// The signal that asked to stop (`SIGTERM`), if one did.
pub fn requested() -> Option<&'static str> {
    let flags = FLAGS.get()?;
    if !flags.stop.load(Ordering::SeqCst) {
        return None;
    }
    let sig = flags.which.load(Ordering::SeqCst) as i32;
    Some(SIGNALS.iter().find(|(s, _)| *s == sig).map_or("a signal", |(_, name)| name))
}

/// The error a run stopped by a signal ends with; [`exit_status`] turns it into
/// [`EXIT_INTERRUPTED`] and the line that says how to resume.
#[derive(Debug, Clone, PartialEq)]
pub struct Interrupted {
    /// Where: `resnet20 seed0 at iteration 137`, `before resnet56 seed1`.
    pub at: String,
    pub signal: &'static str,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by {}: {}, everything up to there is saved", self.signal, self.at)
    }
}

impl std::error::Error for Interrupted {}

/// The process's exit status for a binary's result: 0, [`EXIT_INTERRUPTED`] (with how to resume:
/// the same command), or 1 with the error and its causes.
pub fn exit_status(result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(i) => {
                let command: Vec<String> = std::env::args().map(|a| shell_word(&a)).collect();
                eprintln!("{i}.\nResume with the same command:\n  {}", command.join(" "));
                std::process::ExitCode::from(EXIT_INTERRUPTED)
            }
            None => {
                eprintln!("{}", error_report(&e));
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// An error as the binaries print it: the message (with its HINT lines) and the causes under it,
/// without the stack backtrace anyhow captures when RUST_BACKTRACE is set. An expected error
/// (missing data, a bad file) is not a bug: backtraces stay for panics.
pub fn error_report(e: &anyhow::Error) -> String {
    let mut out = format!("Error: {e}");
    let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
    if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
    }
    for (i, cause) in causes.iter().enumerate() {
        let label = if causes.len() == 1 { String::new() } else { format!("{i}: ") };
        let indent = " ".repeat(4 + label.len());
        for (j, line) in cause.lines().enumerate() {
            let lead = if j == 0 { format!("    {label}") } else { indent.clone() };
            out.push_str(&format!("\n{lead}{line}"));
        }
    }
    out
}

/// `a` as one shell word (quoted if it needs to be).
fn shell_word(a: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !a.is_empty() && a.chars().all(plain) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_report_has_the_message_hint_and_causes_but_no_backtrace() {
        // What RUST_BACKTRACE=1 makes anyhow capture (forced here, whatever the environment).
        let inner = anyhow::Error::msg("no such file").context("reading data/x.bin");
        let e = inner.context("CIFAR-10 cannot be downloaded\nHINT: place the archive in data/");
        assert!(format!("{e:?}").contains("Caused by"), "anyhow's own rendering, for comparison");
        let text = super::error_report(&e);
        assert_eq!(
            text,
            "Error: CIFAR-10 cannot be downloaded\nHINT: place the archive in data/\n\nCaused by:\n    \
             0: reading data/x.bin\n    1: no such file"
        );
        let one = super::error_report(&anyhow::Error::msg("bad").context("top"));
        assert_eq!(one, "Error: top\n\nCaused by:\n    bad");
        assert!(!super::error_report(&e).contains("backtrace"));
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(super::shell_word("--config=experiments/quick.toml"), "--config=experiments/quick.toml");
        assert_eq!(super::shell_word("my runs"), "'my runs'");
        assert_eq!(super::shell_word("it's"), r"'it'\''s'");
        assert_eq!(super::shell_word(""), "''");
    }
}
