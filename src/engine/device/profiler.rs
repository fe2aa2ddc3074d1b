//! Per-kernel GPU times: timestamp queries written around every dispatch (and texture
//! copy) while profiling, resolved at each submit; where the adapter has no timestamps
//! inside passes, the recorder brackets each dispatch with wall time instead.

use std::cell::RefCell;
use std::collections::HashMap;

/// Per-kernel GPU time, filled from timestamp queries when profiling is on.
#[derive(Default, Clone)]
pub struct KernelStat {
    pub calls: u64,
    pub ns: f64,
    pub flops: f64,
    pub bytes: f64,
}

/// One profiling session's queries and totals.
struct Session {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    capacity: u32,
    /// Kernel label and cost per recorded dispatch, in order.
    pending: Vec<(String, f64, f64)>,
    stats: HashMap<String, KernelStat>,
    wall: bool,
}

pub struct Profiler {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// Timestamps inside compute passes (else wall-time brackets).
    in_passes: bool,
    /// Timestamps between commands (texture copies are timed only then).
    in_encoders: bool,
    /// `ACTIVEGEN_TRACE`: print each timed dispatch.
    trace: bool,
    session: RefCell<Option<Session>>,
}

impl Profiler {
    pub fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        features: wgpu::Features,
        trace: bool,
    ) -> Profiler {
        Profiler {
            device: device.clone(),
            queue: queue.clone(),
            in_passes: features.contains(
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            ),
            in_encoders: features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS),
            trace,
            session: RefCell::new(None),
        }
    }

    /// Whether dispatches can be timed by timestamp queries here.
    pub fn has_timestamps(&self) -> bool {
        self.in_passes
    }

    /// Starts a session (the caller has submitted everything recorded before).
    pub fn start(&self) {
        let wall = !self.in_passes;
        let capacity = 4096u32;
        let query_set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: if wall { 2 } else { capacity },
        });
        let mk = |usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile"),
                size: capacity as u64 * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        *self.session.borrow_mut() = Some(Session {
            query_set,
            resolve: mk(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readback: mk(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            capacity,
            pending: Vec::new(),
            stats: HashMap::new(),
            wall,
        });
    }

    /// Ends the session (the caller has waited for the device) and returns (kernel,
    /// stats), most expensive first.
    pub fn stop(&self) -> Vec<(String, KernelStat)> {
        let s = self.session.borrow_mut().take();
        let mut v: Vec<(String, KernelStat)> =
            s.map(|s| s.stats.into_iter().collect()).unwrap_or_default();
        v.sort_by(|a, b| b.1.ns.total_cmp(&a.1.ns));
        v
    }

    /// Profiling with timestamp queries now.
    pub fn timing_with_queries(&self) -> bool {
        self.session.borrow().as_ref().is_some_and(|s| !s.wall)
    }

    /// Profiling with wall-time brackets now.
    pub fn timing_with_wall_clock(&self) -> bool {
        self.session.borrow().as_ref().is_some_and(|s| s.wall)
    }

    /// Profiling texture copies now (timestamps between commands).
    pub fn timing_copies(&self) -> bool {
        self.in_encoders && self.timing_with_queries()
    }

    /// Whether one more timed entry would overflow the query set (then submit first).
    pub fn full(&self) -> bool {
        self.session
            .borrow()
            .as_ref()
            .is_some_and(|s| !s.wall && (s.pending.len() as u32 + 1) * 2 > s.capacity)
    }

    /// Writes the opening (or, `second`, closing) timestamp of the next entry into a pass.
    pub fn stamp_in_pass(&self, pass: &mut wgpu::ComputePass<'static>, second: bool) {
        if let Some(s) = self.session.borrow().as_ref().filter(|s| !s.wall) {
            pass.write_timestamp(&s.query_set, s.pending.len() as u32 * 2 + second as u32);
        }
    }

    /// `stamp_in_pass` between commands of an encoder.
    pub fn stamp_in_encoder(&self, encoder: &mut wgpu::CommandEncoder, second: bool) {
        if let Some(s) = self.session.borrow().as_ref().filter(|s| !s.wall) {
            encoder.write_timestamp(&s.query_set, s.pending.len() as u32 * 2 + second as u32);
        }
    }

    /// Closes the entry whose two timestamps were just written.
    pub fn push_entry(&self, name: &str, flops: f64, bytes: f64) {
        if let Some(s) = self.session.borrow_mut().as_mut().filter(|s| !s.wall) {
            s.pending.push((name.to_string(), flops, bytes));
        }
    }

    /// Adds one wall-time bracket.
    pub fn add_wall(&self, name: &str, ns: f64, flops: f64, bytes: f64) {
        if let Some(s) = self.session.borrow_mut().as_mut() {
            let stat = s.stats.entry(name.to_string()).or_default();
            stat.calls += 1;
            stat.ns += ns;
            stat.flops += flops;
            stat.bytes += bytes;
        }
    }

    /// Records the resolve of this submit's timestamps; true if there were any (then
    /// `collect` after the submit).
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) -> bool {
        match self.session.borrow().as_ref() {
            Some(s) if !s.wall && !s.pending.is_empty() => {
                let n = (s.pending.len() * 2) as u32;
                encoder.resolve_query_set(&s.query_set, 0..n, &s.resolve, 0);
                encoder.copy_buffer_to_buffer(&s.resolve, 0, &s.readback, 0, n as u64 * 8);
                true
            }
            _ => false,
        }
    }

    /// Waits for the resolved timestamps and adds them to the totals.
    pub fn collect(&self) {
        let mut session = self.session.borrow_mut();
        let s = session.as_mut().unwrap();
        let n = s.pending.len() * 2;
        let slice = s.readback.slice(0..n as u64 * 8);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map timestamps"));
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        let period = self.queue.get_timestamp_period() as f64;
        {
            let data = slice.get_mapped_range().expect("mapped timestamps");
            let ts: &[u64] = bytemuck::cast_slice(&data);
            for (i, (name, flops, bytes)) in s.pending.iter().enumerate() {
                let dt = ts[2 * i + 1].saturating_sub(ts[2 * i]) as f64 * period;
                if self.trace {
                    eprintln!(
                        "timed {name} {:.3} ms {:.1} MFLOP {:.2} MB",
                        dt / 1e6,
                        flops / 1e6,
                        bytes / 1e6
                    );
                }
                let stat = s.stats.entry(name.clone()).or_default();
                stat.calls += 1;
                stat.ns += dt;
                stat.flops += flops;
                stat.bytes += bytes;
            }
        }
        s.readback.unmap();
        s.pending.clear();
    }
}
