//! Recording: every dispatch, copy and clear of a step goes into one command encoder
//! (compute passes opened as needed), uniform parameters into a ring of chunks, and all of
//! it is submitted once per `flush`. Readback is the one blocking point, in two halves
//! (`start_read`, `PendingRead::wait`) so that a browser build can await the second.
//!
//! The recorder also stamps every write it records, so that a texture copy of a buffer
//! (`textures`) knows whether the buffer changed since.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::pipelines::{Access, Kernel};
use super::profiler::Profiler;

/// The work one dispatch does, for GFLOP/s and GB/s in the profile.
#[derive(Clone, Copy, Default, Debug)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
}

impl Cost {
    pub fn flops(flops: f64, bytes: f64) -> Cost {
        Cost { flops, bytes }
    }
    pub fn bytes(bytes: f64) -> Cost {
        Cost { flops: 0.0, bytes }
    }
}

const PARAM_CHUNK: u64 = 64 * 1024;

struct ParamChunk {
    buffer: wgpu::Buffer,
    data: Vec<u8>,
}

#[derive(Default)]
struct Open {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
}

/// A key for a buffer while it lives (wgpu hashes its id, which carries an epoch).
pub fn buffer_key(b: &wgpu::Buffer) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Stamps of the last recorded write to each buffer.
#[derive(Default)]
struct WriteLog {
    stamps: HashMap<u64, u64>,
    clock: u64,
    /// The stamp of buffers not in `stamps`: raised past every stamp handed out when the
    /// map is cleared, so no copy taken before then still counts as current.
    floor: u64,
}

pub struct Recorder {
    device: wgpu::Device,
    queue: wgpu::Queue,
    open: RefCell<Open>,
    /// Uniform chunks and the index of the one being filled; written at `flush`.
    params: RefCell<(Vec<ParamChunk>, usize)>,
    param_align: u64,
    writes: RefCell<WriteLog>,
    pub profiler: Profiler,
    /// Counts submits, for tests and the profile ("one submit per step").
    pub submits: Cell<u64>,
    /// `ACTIVEGEN_TRACE`: print every dispatch.
    trace: bool,
}

impl Recorder {
    pub fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        limits: &wgpu::Limits,
        profiler: Profiler,
        trace: bool,
    ) -> Recorder {
        Recorder {
            device: device.clone(),
            queue: queue.clone(),
            open: RefCell::new(Open::default()),
            params: RefCell::new((Vec::new(), 0)),
            param_align: (limits.min_uniform_buffer_offset_alignment as u64).max(16),
            writes: RefCell::new(WriteLog::default()),
            profiler,
            submits: Cell::new(0),
            trace,
        }
    }

    /// The stamp of the last recorded write to `buffer`.
    pub fn stamp(&self, buffer: &wgpu::Buffer) -> u64 {
        let log = self.writes.borrow();
        log.stamps
            .get(&buffer_key(buffer))
            .copied()
            .unwrap_or(log.floor)
    }

    /// Notes a write to `buffer` (recorded now, so ordered before any later copy of it).
    fn mark_written(&self, buffer: &wgpu::Buffer) {
        let mut log = self.writes.borrow_mut();
        log.clock += 1;
        let stamp = log.clock;
        if log.stamps.len() >= 1 << 16 {
            // Keys of long-gone buffers pile up; forgetting all stamps forgets all copies.
            log.stamps.clear();
            log.floor = stamp;
        }
        log.stamps.insert(buffer_key(buffer), stamp);
    }

    fn push_params(&self, params: &[u8]) -> (wgpu::Buffer, u64, u64) {
        let size = (params.len() as u64).max(16).next_multiple_of(16);
        let mut p = self.params.borrow_mut();
        let (chunks, cur) = &mut *p;
        loop {
            if *cur == chunks.len() {
                let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: PARAM_CHUNK,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                chunks.push(ParamChunk {
                    buffer,
                    data: Vec::with_capacity(PARAM_CHUNK as usize),
                });
            }
            let chunk = &mut chunks[*cur];
            let offset = (chunk.data.len() as u64).next_multiple_of(self.param_align);
            if offset + size <= PARAM_CHUNK {
                chunk.data.resize(offset as usize, 0);
                chunk.data.extend_from_slice(params);
                chunk.data.resize((offset + size) as usize, 0);
                return (chunk.buffer.clone(), offset, size);
            }
            *cur += 1;
        }
    }

    /// The bind group of one dispatch: `params` in the uniform at binding 0 (if the entry
    /// point uses it), `buffers[i]` at binding i + 1, `textures` as (binding, view).
    fn bind_group(
        &self,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        textures: &[(u32, &wgpu::TextureView)],
    ) -> wgpu::BindGroup {
        let param_slot = if kernel.bindings.iter().any(|b| b.1 == Access::Uniform) {
            Some(self.push_params(params))
        } else {
            None
        };
        let entries: Vec<wgpu::BindGroupEntry> = kernel
            .bindings
            .iter()
            .map(|&(binding, access)| {
                let resource = if access == Access::Uniform {
                    let (buf, offset, size) = param_slot.as_ref().unwrap();
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: buf,
                        offset: *offset,
                        size: std::num::NonZeroU64::new(*size),
                    })
                } else if matches!(access, Access::Texture(_)) {
                    let view = textures.iter().find(|t| t.0 == binding).unwrap_or_else(|| {
                        panic!("{}: binding {binding} was not given a texture", kernel.name)
                    });
                    wgpu::BindingResource::TextureView(view.1)
                } else {
                    let b = buffers.get(binding as usize - 1).unwrap_or_else(|| {
                        panic!("{}: binding {binding} was not given a buffer", kernel.name)
                    });
                    if access == Access::ReadWrite {
                        self.mark_written(b);
                    }
                    b.as_entire_binding()
                };
                wgpu::BindGroupEntry { binding, resource }
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        })
    }

    /// Records one dispatch of `kernel` (see `bind_group` for the bindings). Nothing runs
    /// until `flush`.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        textures: &[(u32, &wgpu::TextureView)],
        workgroups: [u32; 3],
        cost: Cost,
    ) {
        if workgroups.contains(&0) {
            return;
        }
        let bind_group = self.bind_group(kernel, params, buffers, textures);
        if self.trace {
            let writes: Vec<String> = kernel
                .bindings
                .iter()
                .filter(|b| b.1 == Access::ReadWrite)
                .map(|b| format!("{:016x}", buffer_key(buffers[b.0 as usize - 1])))
                .collect();
            eprintln!(
                "dispatch {} writes {:?} {:?}",
                kernel.name, writes, workgroups
            );
        }
        if self.profiler.full() {
            self.flush();
        }
        let mut open = self.open.borrow_mut();
        self.ensure_pass(&mut open);
        let pass = open.pass.as_mut().unwrap();
        self.profiler.stamp_in_pass(pass, false);
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        self.profiler.stamp_in_pass(pass, true);
        self.profiler
            .push_entry(&kernel.name, cost.flops, cost.bytes);
        drop(open);
        if self.profiler.timing_with_wall_clock() {
            // Without timestamp queries each dispatch is bracketed by wall time: slow, but it
            // still ranks the kernels.
            let t = std::time::Instant::now();
            self.sync();
            let ns = t.elapsed().as_nanos() as f64;
            self.profiler
                .add_wall(&kernel.name, ns, cost.flops, cost.bytes);
        }
    }

    fn new_encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            })
    }

    fn ensure_pass(&self, open: &mut Open) {
        if open.pass.is_some() {
            return;
        }
        let encoder = open.encoder.get_or_insert_with(|| self.new_encoder());
        let pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            })
            .forget_lifetime();
        open.pass = Some(pass);
    }

    /// Runs `f` on the open encoder, outside any compute pass (for copies and clears).
    /// `writes` names every buffer the commands write: texture copies of them are then out
    /// of date.
    pub fn with_encoder(
        &self,
        writes: &[&wgpu::Buffer],
        f: impl FnOnce(&mut wgpu::CommandEncoder),
    ) {
        for b in writes {
            self.mark_written(b);
        }
        let mut open = self.open.borrow_mut();
        open.pass = None;
        let encoder = open.encoder.get_or_insert_with(|| self.new_encoder());
        f(encoder);
    }

    /// Records `copy` (commands outside compute passes) and, when profiling with timestamps
    /// that may sit between commands, brackets it as one `texture_copy` entry of the
    /// profile, so that the per-kernel table accounts for the copies too.
    pub fn timed_copy(&self, bytes: f64, copy: impl FnOnce()) {
        if !self.profiler.timing_copies() {
            copy();
            return;
        }
        if self.profiler.full() {
            self.flush();
        }
        self.with_encoder(&[], |e| self.profiler.stamp_in_encoder(e, false));
        copy();
        self.with_encoder(&[], |e| self.profiler.stamp_in_encoder(e, true));
        self.profiler.push_entry("texture_copy", 0.0, bytes);
    }

    /// Submits everything recorded so far, as one command buffer.
    pub fn flush(&self) {
        let mut open = self.open.borrow_mut();
        open.pass = None;
        let Some(mut encoder) = open.encoder.take() else {
            return;
        };
        drop(open);
        let resolved = self.profiler.resolve(&mut encoder);
        {
            let mut p = self.params.borrow_mut();
            let (chunks, cur) = &mut *p;
            for c in chunks.iter_mut() {
                if !c.data.is_empty() {
                    self.queue.write_buffer(&c.buffer, 0, &c.data);
                    c.data.clear();
                }
            }
            *cur = 0;
        }
        self.queue.submit([encoder.finish()]);
        self.submits.set(self.submits.get() + 1);
        if resolved {
            self.profiler.collect();
        }
    }

    /// Blocks until the device is idle.
    pub fn sync(&self) {
        self.flush();
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }

    /// Records a copy of `bytes` bytes of `src` into a staging buffer and submits; the
    /// bytes are the host's after `PendingRead::wait`.
    pub fn start_read(&self, src: &wgpu::Buffer, bytes: u64) -> PendingRead {
        let size = bytes.next_multiple_of(4).max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.with_encoder(&[], |e| e.copy_buffer_to_buffer(src, 0, &staging, 0, size));
        self.flush();
        PendingRead {
            staging,
            bytes,
            device: self.device.clone(),
        }
    }

    /// Copies `bytes` bytes of `src` to the host. Flushes and waits: call only when a
    /// value is needed.
    pub fn read_buffer(&self, src: &wgpu::Buffer, bytes: u64) -> Vec<u8> {
        self.start_read(src, bytes).wait()
    }

    pub fn write_buffer(&self, dst: &wgpu::Buffer, data: &[u8]) {
        // Written data must land after anything already recorded that reads `dst`.
        self.flush();
        self.mark_written(dst);
        self.queue.write_buffer(dst, 0, data);
    }

    /// Closes an open compute pass (before the device drops).
    pub fn close_pass(&self) {
        self.open.borrow_mut().pass = None;
    }
}

/// A readback submitted by `Recorder::start_read`.
pub struct PendingRead {
    staging: wgpu::Buffer,
    bytes: u64,
    device: wgpu::Device,
}

impl PendingRead {
    /// Blocks until the copy is done and returns its bytes. The one place the engine
    /// waits for the device's results.
    pub fn wait(self) -> Vec<u8> {
        let slice = self.staging.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map readback buffer"));
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        self.take_mapped()
    }

    /// The mapped staging buffer's bytes; unmaps it.
    fn take_mapped(self) -> Vec<u8> {
        let data = self
            .staging
            .slice(..)
            .get_mapped_range()
            .expect("mapped readback range");
        let mut out = data.to_vec();
        drop(data);
        self.staging.unmap();
        out.truncate(self.bytes as usize);
        out
    }

    /// The bytes, without blocking the thread: in the browser the copy finishes while the
    /// page's event loop runs, so this yields to it until the buffer is mapped. Natively it
    /// is `wait`.
    pub async fn read(self) -> Vec<u8> {
        #[cfg(target_arch = "wasm32")]
        {
            let slice = self.staging.slice(..);
            let mapped = js_sys::Promise::new(&mut |resolve, _reject| {
                slice.map_async(wgpu::MapMode::Read, move |r| {
                    let ok = wasm_bindgen::JsValue::from_bool(r.is_ok());
                    let _ = resolve.call1(&wasm_bindgen::JsValue::NULL, &ok);
                });
            });
            let ok = wasm_bindgen_futures::JsFuture::from(mapped).await;
            assert!(
                ok.is_ok_and(|v| v.as_bool() == Some(true)),
                "the readback buffer could not be mapped"
            );
            self.take_mapped()
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.wait()
    }
}
