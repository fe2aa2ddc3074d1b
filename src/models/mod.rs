//! The models: a DCGAN (optionally class-conditional), a convolutional VAE, the small
//! classifier whose features the quality metrics use on labelled data, and the
//! self-supervised encoder built on the same trunk. Each names its tensors as the
//! equivalent PyTorch module would (see README for the PyTorch classes).

pub mod classifier;
pub mod dcgan;
pub mod encoder;
pub mod vae;

use anyhow::{bail, Result};

/// Number of stride-2 stages from the starting size to the image: 28 = 7*2^2, 32 = 4*2^3,
/// 64 = 4*2^4.
pub fn stages(resolution: usize) -> Result<(usize, usize)> {
    match resolution {
        28 => Ok((2, 7)),
        32 => Ok((3, 4)),
        64 => Ok((4, 4)),
        r => bail!("resolution {r} is not supported: use 28, 32 or 64"),
    }
}
