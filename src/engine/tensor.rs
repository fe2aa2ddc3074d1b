//! Tensors: contiguous f32 data in a pooled GPU buffer, with a shape.
//!
//! A tensor is cheap to clone (an `Rc` to its storage). `reshape` is a view: the same
//! storage under another shape. Every tensor has an id that the tape uses to route
//! gradients; `requires_grad` marks parameters and everything computed from them.

use std::rc::Rc;

use anyhow::{bail, Result};

use crate::engine::device::Storage;
use crate::engine::Engine;

#[derive(Clone)]
pub struct Tensor {
    pub(crate) storage: Rc<Storage>,
    shape: Vec<usize>,
    pub(crate) id: u64,
    pub(crate) requires_grad: bool,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor#{}{:?}", self.id, self.shape)
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// An uninitialised tensor from the pool. `what` names it in size errors.
    pub fn empty(g: &Engine, shape: &[usize], what: &str) -> Result<Tensor> {
        let n = numel(shape);
        let bytes = (n.max(1) * 4) as u64;
        let storage = g.device.alloc(bytes, what)?;
        Ok(Tensor {
            storage,
            shape: shape.to_vec(),
            id: g.fresh_id(),
            requires_grad: false,
        })
    }

    pub fn zeros(g: &Engine, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::empty(g, shape, "zeros")?;
        let bytes = t.byte_len();
        g.device.with_encoder(&[t.buffer()], |e| {
            e.clear_buffer(t.buffer(), 0, Some(bytes))
        });
        Ok(t)
    }

    pub fn full(g: &Engine, shape: &[usize], value: f32) -> Result<Tensor> {
        crate::engine::ops::elementwise::fill(g, shape, value)
    }

    /// Uploads `data` (row-major) through a staging buffer copied inside the open encoder,
    /// so an upload is ordered with the dispatches around it and costs no extra submit.
    pub fn from_slice(g: &Engine, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        if numel(shape) != data.len() {
            bail!(
                "shape {:?} holds {} values but {} were given",
                shape,
                numel(shape),
                data.len()
            );
        }
        let t = Tensor::empty(g, shape, "upload")?;
        t.write(g, data);
        Ok(t)
    }

    /// Overwrites the tensor's contents from the host, in stream order.
    pub fn write(&self, g: &Engine, data: &[f32]) {
        assert_eq!(
            data.len(),
            self.numel(),
            "write: length mismatch for {:?}",
            self.shape
        );
        if data.is_empty() {
            return;
        }
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let staging = g.device.wgpu.create_buffer(&wgpu::BufferDescriptor {
            label: Some("upload"),
            size: bytes.len() as u64,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::MAP_WRITE,
            mapped_at_creation: true,
        });
        staging
            .slice(..)
            .get_mapped_range_mut()
            .expect("staging buffer is mapped at creation")
            .copy_from_slice(bytes);
        staging.unmap();
        g.device.with_encoder(&[self.buffer()], |e| {
            e.copy_buffer_to_buffer(&staging, 0, self.buffer(), 0, bytes.len() as u64)
        });
    }

    pub fn scalar(g: &Engine, v: f32) -> Result<Tensor> {
        Tensor::from_slice(g, &[1], &[v])
    }

    /// Copies the values to the host. Submits and waits: keep it out of hot loops.
    pub fn to_vec(&self, g: &Engine) -> Vec<f32> {
        let bytes = g.device.read_buffer(self.buffer(), self.byte_len());
        bytemuck::cast_slice(&bytes).to_vec()
    }

    /// The values, without blocking the thread (`PendingRead::read`): the browser's way
    /// to read a tensor. Natively it waits like `to_vec`.
    pub async fn read(&self, g: &Engine) -> Vec<f32> {
        let pending = g.device.start_read(self.buffer(), self.byte_len());
        let bytes = pending.read().await;
        bytemuck::cast_slice(&bytes).to_vec()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self, g: &Engine) -> f32 {
        assert_eq!(
            self.numel(),
            1,
            "item() needs a one-element tensor, got {:?}",
            self.shape
        );
        self.to_vec(g)[0]
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dim(&self, i: usize) -> usize {
        self.shape[i]
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn byte_len(&self) -> u64 {
        (self.numel() * 4) as u64
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.storage.buffer()
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn requires_grad(&self) -> bool {
        self.requires_grad
    }

    /// Marks a leaf (a parameter) so the tape computes its gradient.
    pub fn into_param(mut self) -> Tensor {
        self.requires_grad = true;
        self
    }

    /// The same storage under a new id that the tape does not follow.
    pub fn detach(&self, g: &Engine) -> Tensor {
        Tensor {
            storage: self.storage.clone(),
            shape: self.shape.clone(),
            id: g.fresh_id(),
            requires_grad: false,
        }
    }

    /// A view with another shape of the same element count; recorded on the tape so the
    /// gradient flows back in the original shape.
    pub fn reshape(&self, g: &Engine, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            bail!(
                "cannot reshape {:?} ({} values) to {:?}",
                self.shape,
                self.numel(),
                shape
            );
        }
        let out = Tensor {
            storage: self.storage.clone(),
            shape: shape.to_vec(),
            id: g.fresh_id(),
            requires_grad: false,
        };
        Ok(crate::engine::tape::record(
            g,
            out,
            crate::engine::tape::Op::Reshape { x: self.clone() },
        ))
    }

    /// A deep copy in a new buffer (recorded in the open encoder).
    pub fn copy(&self, g: &Engine) -> Result<Tensor> {
        let t = Tensor::empty(g, &self.shape, "copy")?;
        let bytes = self.byte_len();
        g.device.with_encoder(&[t.buffer()], |e| {
            e.copy_buffer_to_buffer(self.buffer(), 0, t.buffer(), 0, bytes)
        });
        Ok(t)
    }

    /// Overwrites this tensor's contents with `src`'s (same element count).
    pub fn copy_from(&self, g: &Engine, src: &Tensor) {
        assert_eq!(self.numel(), src.numel(), "copy_from: size mismatch");
        let bytes = self.byte_len();
        g.device.with_encoder(&[self.buffer()], |e| {
            e.copy_buffer_to_buffer(src.buffer(), 0, self.buffer(), 0, bytes)
        });
    }

    pub(crate) fn with_requires_grad(mut self, r: bool) -> Tensor {
        self.requires_grad = r;
        self
    }
}
