//! Every strategy by name. A new strategy is one file (and its `mod` line in
//! active/mod.rs) plus one line here.

use anyhow::{bail, Result};

use super::strategy::Strategy;

pub type MakeStrategy = fn() -> Box<dyn Strategy>;

pub const REGISTRY: &[(&str, MakeStrategy)] = &[
    ("random", || Box::new(super::random::Random)),
    ("gan-disc", || Box::new(super::gan_disc::GanDisc)),
    ("vae-elbo", || Box::new(super::vae_elbo::VaeElbo)),
    ("coreset", || Box::new(super::coreset::Coreset)),
    ("coverage-gap", || {
        Box::new(super::coverage_gap::CoverageGap { k: 5 })
    }),
    ("hybrid", || Box::new(super::hybrid::Hybrid)),
    ("coverage-hybrid", || {
        Box::new(super::coverage_hybrid::CoverageHybrid { k: 5 })
    }),
    ("coverage-stratified", || {
        Box::new(super::coverage_stratified::CoverageStratified { k: 5 })
    }),
    ("vaal", || Box::new(super::vaal::Vaal)),
    ("synthesis", || {
        Box::new(super::synthesis::Synthesis::default())
    }),
];

pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(n, _)| *n).collect()
}

pub fn by_name(name: &str) -> Result<Box<dyn Strategy>> {
    match REGISTRY.iter().find(|(n, _)| *n == name) {
        Some((_, make)) => Ok(make()),
        None => bail!(
            "unknown strategy '{name}': expected one of {}",
            names().join(", ")
        ),
    }
}
