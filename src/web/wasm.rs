//! The page's JavaScript interface (wasm-bindgen). Every call that reads the device returns
//! a Promise; errors reach JavaScript as one-line messages.
//!
//! The session sits behind `Rc<RefCell<…>>` because a Promise outlives the call that made
//! it: each async method clones the handle into its future. The page awaits one call at a
//! time; a second call while one is in flight is refused, not queued.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::{Grid, Session};
use crate::engine::Engine;

fn js_error(e: anyhow::Error) -> JsValue {
    JsValue::from_str(&format!("{e:#}"))
}

#[wasm_bindgen]
pub struct WebSession {
    inner: Rc<RefCell<Session>>,
}

/// Opens the page's WebGPU adapter and builds a session: resolves to a `WebSession`.
/// `subgroups`: the page asks for the `subgroups` feature (web/subgroups.js).
#[wasm_bindgen(js_name = createSession)]
pub fn create_session(seed: u32, initial: u32, batch: u32, subgroups: bool) -> Promise {
    future_to_promise(async move {
        let g = Engine::new_browser(subgroups).await.map_err(js_error)?;
        let s = Session::new(g, seed as u64, initial as usize, batch as usize).map_err(js_error)?;
        Ok(WebSession {
            inner: Rc::new(RefCell::new(s)),
        }
        .into())
    })
}

/// Runs the kernel checks (`checks.rs`) on the page's adapter: resolves to
/// `{adapter, checks: [{name, elements, worstExcess, passed}, …]}`.
#[wasm_bindgen(js_name = runKernelChecks)]
pub fn run_kernel_checks(subgroups: bool) -> Promise {
    future_to_promise(async move {
        let g = Engine::new_browser(subgroups).await.map_err(js_error)?;
        let checks = super::checks::run_kernel_checks(&g)
            .await
            .map_err(js_error)?;
        let list = Array::new();
        for c in checks {
            let o = js_sys::Object::new();
            js_sys::Reflect::set(&o, &"name".into(), &c.name.as_str().into())?;
            js_sys::Reflect::set(&o, &"elements".into(), &(c.elements as u32).into())?;
            js_sys::Reflect::set(&o, &"worstExcess".into(), &(c.worst_excess as f64).into())?;
            js_sys::Reflect::set(&o, &"passed".into(), &c.passed().into())?;
            list.push(&o);
        }
        let out = js_sys::Object::new();
        let gemm = format!("{:?}", g.policy().gemm);
        js_sys::Reflect::set(&out, &"adapter".into(), &g.name().into())?;
        js_sys::Reflect::set(&out, &"gemm".into(), &gemm.into())?;
        js_sys::Reflect::set(&out, &"checks".into(), &list)?;
        Ok(out.into())
    })
}

/// A grid as `{width, height, pixels}` (grayscale bytes).
fn grid_js(grid: &Grid) -> JsValue {
    let o = js_sys::Object::new();
    let set = |k: &str, v: JsValue| js_sys::Reflect::set(&o, &k.into(), &v).unwrap();
    set("width", (grid.width as u32).into());
    set("height", (grid.height as u32).into());
    set("pixels", Uint8Array::from(&grid.pixels[..]).into());
    o.into()
}

// Each call holds its borrow across its awaits on purpose: that is what refuses a second
// call while one is in flight (`busy`), instead of letting two interleave on one engine.
#[allow(clippy::await_holding_refcell_ref)]
#[wasm_bindgen]
impl WebSession {
    pub fn adapter(&self) -> String {
        self.inner.borrow().adapter()
    }

    pub fn steps(&self) -> u32 {
        self.inner.borrow().steps() as u32
    }

    pub fn acquired(&self) -> u32 {
        self.inner.borrow().acquired() as u32
    }

    /// Records and submits `n` steps; returns at once (nothing is read back).
    pub fn train(&self, n: u32) -> Result<(), JsValue> {
        let mut s = self.inner.try_borrow_mut().map_err(|_| busy())?;
        s.train(n as usize).map_err(js_error)
    }

    /// Resolves to `[[name, value], …]`, the last step's losses.
    pub fn losses(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let s = inner.try_borrow().map_err(|_| busy())?;
            let losses = s.losses().await.map_err(js_error)?;
            let out = Array::new();
            for (name, v) in losses {
                out.push(&Array::of2(&name.into(), &(v as f64).into()));
            }
            Ok(out.into())
        })
    }

    /// Resolves to the 8×8 sample grid.
    pub fn samples(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let s = inner.try_borrow().map_err(|_| busy())?;
            Ok(grid_js(&s.samples().await.map_err(js_error)?))
        })
    }

    /// One acquisition round; resolves to `{chosen, random}`, each a grid of pool images.
    pub fn acquire(&self, k: u32, candidates: u32) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let mut s = inner.try_borrow_mut().map_err(|_| busy())?;
            let a = s
                .acquire(k as usize, candidates as usize)
                .await
                .map_err(js_error)?;
            let o = js_sys::Object::new();
            let chosen = grid_js(&s.pool_grid(&a.chosen).map_err(js_error)?);
            let random = grid_js(&s.pool_grid(&a.random).map_err(js_error)?);
            js_sys::Reflect::set(&o, &"chosen".into(), &chosen)?;
            js_sys::Reflect::set(&o, &"random".into(), &random)?;
            Ok(o.into())
        })
    }

    /// Loads a natively trained `generator.safetensors` (or `generator_ema.safetensors`).
    #[wasm_bindgen(js_name = loadGenerator)]
    pub fn load_generator(&self, bytes: Vec<u8>, name: String) -> Result<(), JsValue> {
        let mut s = self.inner.try_borrow_mut().map_err(|_| busy())?;
        s.load_generator(bytes, &name).map_err(js_error)
    }
}

fn busy() -> JsValue {
    JsValue::from_str("the session is busy with another call; await it first")
}
