//! The engine in a real browser: the crate built for wasm32 with wgpu's WebGPU backend
//! (`scripts/web.sh build`), served from 127.0.0.1, driven in headless Chromium on its
//! SwiftShader WebGPU adapter through chromedriver (WebDriver).
//!
//! - the kernel checks (`src/web/checks.rs`) pass in the browser;
//! - the page trains, its losses move and its sample grid is not constant, an acquisition
//!   round shows two grids, and a checkpoint trained natively by `activegen train` gives
//!   the same samples in the browser as natively. A screenshot of the page is written to
//!   `docs/ci/web-page.png` (CI's artifact);
//! - and, natively, the page's session on its own (steps, losses, acquisition, grids).
//!
//! Needs the wasm32 target, wasm-bindgen-cli, chromium and chromium-driver
//! (`scripts/setup.sh --tests`); without them the test fails and says what is missing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds web/pkg once per test process.
fn build_page() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/web.sh"))
            .arg("build")
            .output()
            .expect("run scripts/web.sh");
        assert!(
            out.status.success(),
            "scripts/web.sh build failed (scripts/setup.sh --tests installs the wasm32 target and wasm-bindgen-cli):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Serves `web/` and the extra files in `extra` (URL path -> file) on 127.0.0.1 from a
/// thread; returns the base URL. WebGPU needs a secure context, which localhost is.
fn serve(extra: Vec<(String, PathBuf)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let web = root().join("web");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = serve_one(stream, &web, &extra);
        }
    });
    base
}

fn serve_one(mut s: TcpStream, web: &Path, extra: &[(String, PathBuf)]) -> std::io::Result<()> {
    let mut request = String::new();
    BufReader::new(&s).read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap();
    let file = match extra.iter().find(|(p, _)| p == path) {
        Some((_, f)) => f.clone(),
        None if path.contains("..") => PathBuf::new(),
        None => web.join(path.trim_start_matches('/')),
    };
    let kind = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html",
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    };
    match std::fs::read(&file) {
        Ok(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes())?;
            s.write_all(&body)
        }
        Err(_) => {
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
    }
}

/// A headless Chromium session through chromedriver; both end on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver: {e}; install it with scripts/setup.sh --tests (Debian's chromium-driver)"));
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
        };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--enable-unsafe-webgpu",
            "--enable-features=Vulkan",
            "--use-webgpu-adapter=swiftshader",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1180,1300",
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": common::chromium(), "args": args}}}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_string();
        let s = format!("/session/{}/timeouts", b.session);
        b.call("POST", &s, Some(json!({"script": 900_000})));
        b
    }

    /// One WebDriver command; returns its `value`. Errors panic with the driver's message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to chromedriver");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        // The body by its Content-Length: chromedriver may keep the connection open.
        let mut reader = BufReader::new(s);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "chromedriver answered {path} with non-JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        if let Some(err) = v["value"]["error"].as_str() {
            panic!("WebDriver {path}: {err}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call(
            "POST",
            &format!("/session/{}/url", self.session),
            Some(json!({"url": url})),
        );
    }

    /// Runs `body` as an async function in the page and returns what it returns.
    fn run(&self, body: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             (async () => {{ {body} }})().then(done, (e) => done({{ pageError: String(e) }}));"
        );
        let v = self.call(
            "POST",
            &format!("/session/{}/execute/async", self.session),
            Some(json!({"script": script, "args": []})),
        );
        if let Some(e) = v.get("pageError") {
            panic!("the page threw: {e}");
        }
        v
    }

    fn screenshot(&self) -> Vec<u8> {
        let v = self.call(
            "GET",
            &format!("/session/{}/screenshot", self.session),
            None,
        );
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("decodable screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &path, None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn kernel_checks_pass_in_headless_chromium_on_webgpu() {
    build_page();
    let base = serve(vec![]);
    let browser = Browser::start();
    browser.open(&format!("{base}/checks.html"));
    let r = browser.run("return await window.agChecks;");
    assert!(
        r.get("error").is_none(),
        "the checks page failed: {}",
        r["error"]
    );
    let checks = r["checks"].as_array().expect("a list of checks");
    assert!(checks.len() > 100, "{} checks ran", checks.len());
    let failed: Vec<&Value> = checks.iter().filter(|c| c["passed"] != true).collect();
    assert!(failed.is_empty(), "failed in the browser: {failed:?}");
    for family in ["matmul", "conv2d", "conv_transpose2d", "batchnorm", "adam"] {
        assert!(
            checks
                .iter()
                .any(|c| c["name"].as_str().unwrap().starts_with(family)),
            "no {family} check ran"
        );
    }
}

#[test]
fn the_page_trains_acquires_and_samples_a_native_checkpoint_in_headless_chromium() {
    build_page();
    // A checkpoint trained natively, by the command line.
    let run = std::env::temp_dir().join(format!("activegen-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let run_s = run.to_str().unwrap();
    let (ok, _, err) = common::run_activegen(
        &[
            "train", "--steps", "10", "--batch", "16", "--seed", "3", "--out", run_s,
        ],
        &[],
    );
    assert!(ok, "activegen train: {err}");
    let ckpt = run.join("generator_ema.safetensors");
    // What the page's session samples from it natively.
    let native = {
        let _turn = common::Turn::take();
        let g = activegen::Engine::new(None).unwrap();
        let mut s = activegen::web::Session::new(g, 1, 512, 16).unwrap();
        s.load_generator(std::fs::read(&ckpt).unwrap(), "generator_ema.safetensors")
            .unwrap();
        pollster::block_on(s.samples()).unwrap().pixels
    };

    let base = serve(vec![("/ckpt.safetensors".into(), ckpt)]);
    let browser = Browser::start();
    browser.open(&format!("{base}/index.html?manual&batch=16"));
    let r = browser.run(
        "const page = window.agPage;
         await page.ready;
         await page.runSteps(24);
         const trained = page.state.samples.slice();
         await page.acquire();
         const acquired = document.getElementById('acquired').textContent;
         const bytes = new Uint8Array(await (await fetch('/ckpt.safetensors')).arrayBuffer());
         await page.loadCheckpoint(bytes, 'generator_ema.safetensors');
         const s = page.state;
         return { status: s.status, error: s.error, adapter: s.adapter, losses: s.losses,
                  stepMs: s.stepMs, firstStepMs: s.firstStepMs, trained, acquired,
                  acquisitions: s.acquisitions, fromCheckpoint: s.samples };",
    );
    assert!(r["error"].is_null(), "the page failed: {}", r["error"]);
    eprintln!(
        "browser: adapter {}, {} ms per step (batch 16), first step {} ms after load",
        r["adapter"], r["stepMs"], r["firstStepMs"]
    );

    let losses: Vec<Vec<f64>> = serde_json::from_value(r["losses"].clone()).unwrap();
    assert!(losses.len() >= 3, "losses read at {} points", losses.len());
    assert!(losses.iter().flatten().all(|v| v.is_finite()));
    let (first, last) = (&losses[0], losses.last().unwrap());
    assert!(
        (first[1] - last[1]).abs() > 1e-3 && (first[2] - last[2]).abs() > 1e-3,
        "the losses did not move: {first:?} -> {last:?}"
    );
    let trained: Vec<u8> = serde_json::from_value(r["trained"].clone()).unwrap();
    let (lo, hi) = (trained.iter().min().unwrap(), trained.iter().max().unwrap());
    assert!(
        hi - lo > 100,
        "the sample grid is near constant ({lo}..{hi})"
    );
    assert_eq!(r["acquisitions"], 1);
    assert_eq!(r["acquired"], "576", "512 initial images and 64 acquired");

    // The natively trained checkpoint samples the same images in the browser, to rounding
    // (the browser runs the tiled GEMM, lavapipe the subgroup one: sums in another order).
    let web: Vec<u8> = serde_json::from_value(r["fromCheckpoint"].clone()).unwrap();
    assert_eq!(web.len(), native.len());
    let diffs: Vec<u32> = web
        .iter()
        .zip(&native)
        .map(|(a, b)| a.abs_diff(*b) as u32)
        .collect();
    let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
    let max = *diffs.iter().max().unwrap();
    assert!(
        mean < 0.5 && max <= 3,
        "browser and native samples differ: mean {mean:.3}, max {max} levels"
    );

    let shot = browser.screenshot();
    let img = image::load_from_memory(&shot)
        .expect("a PNG screenshot")
        .to_luma8();
    let dark = img.pixels().filter(|p| p.0[0] < 128).count() as f64;
    let share = dark / (img.width() * img.height()) as f64;
    assert!(
        share > 0.02 && share < 0.9,
        "the page looks blank ({:.1}% dark)",
        share * 100.0
    );
    let dir = root().join("docs/ci");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("web-page.png"), &shot).unwrap();
    let _ = std::fs::remove_dir_all(&run);
}

/// The page's session natively, without a browser: steps, losses, an acquisition round and
/// the grids, so that a failure of the page test can be told apart from one of the session.
#[test]
fn the_page_session_trains_acquires_and_draws_natively() {
    let _turn = common::Turn::take();
    let g = activegen::Engine::new(None).unwrap();
    let mut s = activegen::web::Session::new(g, 5, 64, 16).unwrap();
    assert!(
        pollster::block_on(s.losses()).unwrap().is_empty(),
        "no step yet"
    );
    s.train(3).unwrap();
    assert_eq!(s.steps(), 3);
    let losses = pollster::block_on(s.losses()).unwrap();
    let names: Vec<&str> = losses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["loss_d", "loss_g"]);
    assert!(losses.iter().all(|(_, v)| v.is_finite()));

    let a = pollster::block_on(s.acquire(8, 100)).unwrap();
    assert_eq!((a.chosen.len(), a.random.len()), (8, 8));
    let mut chosen = a.chosen.clone();
    chosen.sort_unstable();
    chosen.dedup();
    assert_eq!(
        chosen.len(),
        8,
        "an image was acquired twice: {:?}",
        a.chosen
    );
    assert_eq!(s.acquired(), 72);
    // The acquired images are new: a second round never picks them again.
    let b = pollster::block_on(s.acquire(8, 100)).unwrap();
    assert!(b.chosen.iter().all(|i| !a.chosen.contains(i)));
    assert!(pollster::block_on(s.acquire(0, 100)).is_err());

    let grid = s.pool_grid(&a.chosen).unwrap();
    assert_eq!((grid.width, grid.height), (8 * 30 + 2, 30 + 2));
    assert_eq!(grid.pixels.len(), grid.width * grid.height);
    let samples = pollster::block_on(s.samples()).unwrap();
    assert_eq!((samples.width, samples.height), (242, 242));
    assert!(activegen::web::Session::new(activegen::Engine::new(None).unwrap(), 5, 0, 16).is_err());
}
