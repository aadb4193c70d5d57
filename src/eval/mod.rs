//! Measuring trained networks: the test protocols ([`protocols`]) and Figure 7's layer responses
//! ([`responses`]). Nothing here trains.

pub mod protocols;
pub mod responses;
pub mod views;

pub use protocols::{
    EvalOptions, EvalResult, error_rate, evaluate_folder, reestimate_bn, reestimate_bn_from_folder, spread,
    topk_wrong, wrong_count,
};
