//! Training: the settings (`config`), the GAN and VAE with their steps and checkpoints
//! (`model`), the one training loop every caller runs its steps through (`trainer`), and
//! the `activegen train` run with its progress bar, sample grids and metrics.jsonl (`run`).
//!
//! A step is recorded into one command encoder and submitted once; losses are copied into
//! a small GPU ring buffer and read back only every `log_every` steps, where NaN or
//! divergence is detected.

pub mod config;
pub mod model;
pub mod run;
pub mod trainer;

pub use config::{changed_setting, load_config, parse_config, save_config, ModelKind, TrainConfig};
pub use model::{compile_step_kernels, GanModel, Model, StepLosses, VaeModel};
pub use run::{
    fixed_latents, heldout_elbo, parse_state, progress_bar, run_train, save_samples, RunDir,
    RunState, TrainOutcome,
};
pub use trainer::{
    check_losses, collapsed_window, read_losses, Learner, LossLog, Sampler, Trainer,
    COLLAPSE_WINDOWS,
};
