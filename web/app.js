// The page's loop: train a few steps per animation frame (recorded and submitted by the
// engine, nothing read back), read the losses every LOSS_EVERY steps and the sample grid
// every SAMPLE_EVERY steps. Every read is a Promise, so the tab never blocks.
//
// window.agPage is the handle tests/browser.rs drives: ready, start(), pause(),
// runSteps(n), acquire(), loadCheckpoint(bytes, name), state.
import init, { createSession } from "./pkg/activegen.js";
import { requestSubgroups } from "./subgroups.js";

const LOSS_EVERY = 10;
const SAMPLE_EVERY = 50;
const STEPS_PER_FRAME = 2;
const $ = (id) => document.getElementById(id);

const state = {
  status: "loading", // loading | ready | training | paused | error
  error: null,
  adapter: null,
  steps: 0,
  losses: [], // [step, loss_d, loss_g]
  stepMs: null,
  firstStepMs: null,
  samples: null, // the last grid's pixels (array), for the page test
  acquisitions: 0,
};
let session = null;
let running = false;
let busy = Promise.resolve();

function fail(message) {
  state.status = "error";
  state.error = String(message);
  const el = $("status");
  el.textContent = String(message);
  el.className = "error";
  running = false;
}

function drawGrid(canvas, grid) {
  canvas.width = grid.width;
  canvas.height = grid.height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(grid.width, grid.height);
  for (let i = 0; i < grid.pixels.length; i++) {
    const v = grid.pixels[i];
    img.data[4 * i] = v;
    img.data[4 * i + 1] = v;
    img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function drawChart() {
  const c = $("chart");
  const ctx = c.getContext("2d");
  const [w, h, pad] = [c.width, c.height, 60];
  ctx.clearRect(0, 0, w, h);
  ctx.font = "22px system-ui, sans-serif";
  ctx.strokeStyle = "#888";
  ctx.strokeRect(pad, 10, w - pad - 10, h - pad - 10);
  const pts = state.losses;
  if (pts.length < 1) return;
  const maxStep = Math.max(pts[pts.length - 1][0], 1);
  const maxLoss = Math.max(...pts.map((p) => Math.max(p[1], p[2])), 1e-3) * 1.05;
  const x = (s) => pad + ((w - pad - 10) * s) / maxStep;
  const y = (v) => h - pad - ((h - pad - 20) * v) / maxLoss;
  ctx.fillStyle = "#444";
  ctx.fillText("0", pad - 20, h - pad);
  ctx.fillText(maxLoss.toFixed(1), 4, 30);
  ctx.fillText(`step ${maxStep}`, w - 150, h - pad + 30);
  const series = [[1, "#1f77b4", "D"], [2, "#d62728", "G"]];
  for (const [col, color, name] of series) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 3;
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(x(p[0]), y(p[col])) : ctx.moveTo(x(p[0]), y(p[col]))));
    ctx.stroke();
    ctx.fillStyle = color;
    ctx.fillText(`loss ${name}`, pad + 20 + (col - 1) * 120, h - pad + 30);
  }
}

function show() {
  $("steps").textContent = state.steps;
  $("acquired").textContent = session ? session.acquired() : "–";
  if (state.stepMs !== null) $("steptime").textContent = `${state.stepMs.toFixed(1)} ms`;
  if (state.firstStepMs !== null) $("firststep").textContent = `${(state.firstStepMs / 1000).toFixed(2)} s`;
  const last = state.losses[state.losses.length - 1];
  if (last) $("losses").textContent = `${last[1].toFixed(3)}, ${last[2].toFixed(3)}`;
}

// Steps since the last loss read, and when that read finished: the step time is wall
// time per step between reads, the read included.
let sinceRead = 0;
let lastRead = null;

async function readLosses() {
  const losses = await session.losses();
  const now = performance.now();
  const byName = Object.fromEntries(losses);
  state.losses.push([state.steps, byName.loss_d, byName.loss_g]);
  if (lastRead !== null && sinceRead > 0) state.stepMs = (now - lastRead) / sinceRead;
  if (state.firstStepMs === null) state.firstStepMs = now;
  lastRead = now;
  sinceRead = 0;
  drawChart();
}

async function readSamples() {
  const grid = await session.samples();
  state.samples = Array.from(grid.pixels);
  drawGrid($("samples"), grid);
}

// n steps, then the reads that fall due; serialised through `busy`.
function steps(n) {
  busy = busy.then(async () => {
    for (let i = 0; i < n; i++) {
      session.train(1);
      state.steps += 1;
      sinceRead += 1;
      if (state.steps % LOSS_EVERY === 0 || state.steps === 1) await readLosses();
      if (state.steps % SAMPLE_EVERY === 0 || state.steps === 1) await readSamples();
    }
    show();
  }).catch(fail);
  return busy;
}

function frame() {
  if (!running) return;
  steps(STEPS_PER_FRAME).then(() => requestAnimationFrame(frame));
}

function start() {
  if (running || state.status === "error") return;
  running = true;
  state.status = "training";
  $("start").textContent = "Pause";
  $("status").textContent = "Training on the acquired digits.";
  requestAnimationFrame(frame);
}

function pause() {
  running = false;
  state.status = "paused";
  $("start").textContent = "Start";
  $("status").textContent = "Paused.";
  return busy;
}

function acquire() {
  busy = busy.then(async () => {
    const a = await session.acquire(64, 2000);
    drawGrid($("chosen"), a.chosen);
    drawGrid($("random"), a.random);
    state.acquisitions += 1;
    show();
  }).catch(fail);
  return busy;
}

function loadCheckpoint(bytes, name) {
  busy = busy.then(async () => {
    session.loadGenerator(bytes, name);
    await readSamples();
    $("status").textContent = `Sampling from ${name}.`;
  }).catch(fail);
  return busy;
}

async function main() {
  if (!navigator.gpu) {
    fail("This browser has no WebGPU (navigator.gpu is missing): use a recent Chrome or Edge, or Firefox 141+, over http://127.0.0.1 or https.");
    return;
  }
  await init();
  const params = new URLSearchParams(location.search);
  const subgroups = await requestSubgroups();
  session = await createSession(1, 512, Number(params.get("batch") || 64), subgroups);
  // wgpu names a browser adapter by its description, often empty; the page's own view of
  // the adapter adds vendor and architecture.
  const info = (await navigator.gpu.requestAdapter())?.info;
  const seen = info ? [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") : "";
  state.adapter = `${seen || "unnamed adapter"} ${session.adapter().trim()}`;
  $("adapter").textContent = state.adapter;
  state.status = "ready";
  $("status").textContent = "Ready: Start trains in this tab.";
  for (const id of ["start", "acquire", "checkpoint"]) $(id).disabled = false;
  $("start").onclick = () => (running ? pause() : start());
  $("acquire").onclick = () => acquire();
  $("checkpoint").onchange = async (e) => {
    const file = e.target.files[0];
    if (file) await loadCheckpoint(new Uint8Array(await file.arrayBuffer()), file.name);
  };
  show();
  if (!params.has("manual")) start();
}

const ready = main().catch(fail);
window.agPage = { ready, state, start, pause, runSteps: steps, acquire, loadCheckpoint };
