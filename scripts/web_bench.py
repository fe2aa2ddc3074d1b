#!/usr/bin/env python3
"""The web page's training step in headless Chromium (SwiftShader WebGPU), for BENCHMARKS.md.

Serves web/ on 127.0.0.1, opens index.html?manual&batch=B through chromedriver, runs STEPS
steps through the page's own loop (losses read every 10 steps, step time = wall time between
reads, read included) and prints one JSON line: step time per 10-step window, the first
step's time after load, the adapter. Standard library only; needs chromium, chromedriver
and a built web/pkg (scripts/web.sh build).

    python3 scripts/web_bench.py [--steps 30] [--batch 64]
    # the README's picture: then one acquisition round, a natively trained checkpoint
    # sampled, and a screenshot
    python3 scripts/web_bench.py --acquire --checkpoint RUN/generator_ema.safetensors \
        --screenshot docs/web-page.png
"""
import argparse, base64, functools, http.server, json, os, socket, subprocess, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
        "--use-webgpu-adapter=swiftshader", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1180,1300"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--acquire", action="store_true", help="then run one acquisition round")
    ap.add_argument("--checkpoint", help="then load and sample this generator safetensors file")
    ap.add_argument("--screenshot", help="write a PNG of the page at the end here")
    a = ap.parse_args()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/checkpoint.safetensors" and a.checkpoint:
                body = open(a.checkpoint, "rb").read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                super().do_GET()

    handler = functools.partial(Quiet, directory=os.path.join(ROOT, "web"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def call(method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=900).read())["value"]

    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": ARGS}}
        sid = call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        call("POST", f"/session/{sid}/timeouts", {"script": 900000})
        call("POST", f"/session/{sid}/url", {"url": f"http://127.0.0.1:{server.server_port}/index.html?manual&batch={a.batch}"})
        script = """const done = arguments[arguments.length - 1];
          (async () => {
            const page = window.agPage; await page.ready;
            const windows = [];
            for (let s = 0; s < %d; s += 10) {
              await page.runSteps(Math.min(10, %d - s));
              if (s > 0) windows.push(page.state.stepMs);
            }
            if (%s) await page.acquire();
            if (%s) {
              const r = await fetch("/checkpoint.safetensors");
              await page.loadCheckpoint(new Uint8Array(await r.arrayBuffer()), %s);
            }
            return { adapter: page.state.adapter, batch: %d, ms_per_step_windows: windows,
                     first_step_ms_after_load: page.state.firstStepMs, error: page.state.error };
          })().then(done, (e) => done({ error: String(e) }));""" % (
            a.steps, a.steps, json.dumps(a.acquire), json.dumps(bool(a.checkpoint)),
            json.dumps(os.path.basename(a.checkpoint or "")), a.batch)
        print(json.dumps(call("POST", f"/session/{sid}/execute/async", {"script": script, "args": []})))
        if a.screenshot:
            png = base64.b64decode(call("GET", f"/session/{sid}/screenshot"))
            open(a.screenshot, "wb").write(png)
        call("DELETE", f"/session/{sid}")
    finally:
        driver.kill()
        server.shutdown()


if __name__ == "__main__":
    main()
