//! The buffer pool: storage buffers are rounded up to size classes and handed back to the
//! pool when the last `Storage` holding one drops, so a training step allocates nothing
//! after its first run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{bail, Result};

/// Sizes are rounded up to classes of 2^k and 1.5 * 2^k bytes, so a static training step
/// finds its buffers in the pool from the second step on.
pub fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = b.next_power_of_two();
    let three_quarters = p / 4 * 3;
    if b <= three_quarters {
        three_quarters
    } else {
        p
    }
}

/// Free buffers by size class, and counters for the profile and tests.
#[derive(Default)]
struct FreeLists {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    allocated_bytes: u64,
    allocations: u64,
    reuses: u64,
}

/// A pooled storage buffer; dropping it gives the buffer back to the pool.
pub struct Storage {
    pub buffer: Option<wgpu::Buffer>,
    pub bytes: u64,
    pool: Rc<RefCell<FreeLists>>,
}

impl Storage {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("storage buffer taken")
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            let class = b.size();
            self.pool
                .borrow_mut()
                .free
                .entry(class)
                .or_default()
                .push(b);
        }
    }
}

/// The pool of one device.
pub struct Memory {
    device: wgpu::Device,
    /// Largest buffer the device binds (the smaller of the binding and buffer limits).
    max_binding_bytes: u64,
    /// Names the adapter in size errors.
    adapter_name: String,
    pool: Rc<RefCell<FreeLists>>,
}

impl Memory {
    pub fn new(device: &wgpu::Device, limits: &wgpu::Limits, adapter_name: &str) -> Memory {
        Memory {
            device: device.clone(),
            max_binding_bytes: limits
                .max_storage_buffer_binding_size
                .min(limits.max_buffer_size),
            adapter_name: adapter_name.to_string(),
            pool: Rc::new(RefCell::new(FreeLists::default())),
        }
    }

    /// Largest tensor the device can bind, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding_bytes
    }

    /// A pooled storage buffer of at least `bytes` bytes. `what` names the tensor for errors.
    pub fn alloc(&self, bytes: u64, what: &str) -> Result<Rc<Storage>> {
        let max = self.max_binding_bytes;
        if bytes > max {
            bail!(
                "tensor '{what}' needs {bytes} bytes but this device binds at most {max} bytes per buffer \
                 (max_storage_buffer_binding_size of '{}'); use a smaller batch or model",
                self.adapter_name
            );
        }
        let class = size_class(bytes).min(max.max(bytes).next_multiple_of(4));
        let mut pool = self.pool.borrow_mut();
        let reused = pool.free.get_mut(&class).and_then(|v| v.pop());
        let buffer = match reused {
            Some(b) => {
                pool.reuses += 1;
                b
            }
            None => {
                pool.allocations += 1;
                pool.allocated_bytes += class;
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: class,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        drop(pool);
        Ok(Rc::new(Storage {
            buffer: Some(buffer),
            bytes,
            pool: self.pool.clone(),
        }))
    }

    /// (buffers created, buffers reused, bytes created).
    pub fn stats(&self) -> (u64, u64, u64) {
        let p = self.pool.borrow();
        (p.allocations, p.reuses, p.allocated_bytes)
    }
}
