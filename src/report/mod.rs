//! What a person reads: the figures ([`figures`], PNGs) and REPORT.md ([`page`]), from the run
//! store alone.

pub mod figures;
pub mod page;
pub mod status;

pub use figures::{render_fig7, render_store};
pub use page::{ReportPaths, build_report, write_report};
