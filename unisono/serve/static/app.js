// unisono web page: pick a task, fill its inputs (text, upload or record audio), generate, listen, look, download.
"use strict";
const $ = (id) => document.getElementById(id);
let TASKS = {};
let DEFAULTS = {};
let SAMPLE_RATE = 16000;
const recorded = {};  // input name -> Blob (WAV) recorded in the page

function setStatus(text) { $("status").textContent = text; }
function showError(text) { const e = $("error"); e.textContent = text; e.hidden = !text; }

async function loadTasks() {
  const r = await fetch("/tasks");
  const info = await r.json();
  DEFAULTS = info.defaults;
  SAMPLE_RATE = info.sample_rate;
  for (const t of info.tasks) TASKS[t.name] = t;
  const sel = $("task");
  const byTitle = Object.values(TASKS).sort((a, b) => (a.title || a.name).localeCompare(b.title || b.name));
  for (const t of byTitle) sel.add(new Option(t.title && t.title !== t.name ? `${t.title} (${t.name})` : t.name, t.name));
  sel.addEventListener("change", renderInputs);
  $("example").addEventListener("click", fillExample);
  const opts = $("options");
  for (const [k, v] of Object.entries(DEFAULTS)) {
    const wrap = document.createElement("div");
    wrap.innerHTML = `<label for="opt-${k}">${k.replace("_", " ")}</label>`;
    const inp = document.createElement("input");
    inp.type = "number"; inp.id = `opt-${k}`; inp.name = k; inp.value = v;
    inp.step = Number.isInteger(v) ? "1" : "any";
    wrap.appendChild(inp); opts.appendChild(wrap);
  }
  renderInputs();
  setStatus(`${Object.keys(TASKS).length} tasks, output at ${info.sample_rate} Hz`);
}

function fillExample() {
  const spec = TASKS[$("task").value];
  for (const [name, value] of Object.entries(spec.example || {})) { const el = $(`in-${name}`); if (el) el.value = value; }
}

function optionalNote(spec, name, kind) {
  if (!spec.optional.includes(name)) return "";
  return kind === "audio" ? " (optional: leave it empty to use the model's default)" : " (optional)";
}

function renderInputs() {
  const spec = TASKS[$("task").value];
  for (const [k, v] of Object.entries(spec.defaults || DEFAULTS)) { const el = $(`opt-${k}`); if (el) el.value = v; }
  $("task-help").textContent = (spec.summary || spec.description) +
    (spec.output === "text" ? " Answers with text." : " Answers with audio.");
  const example = spec.example || {};
  $("example").hidden = Object.keys(example).length === 0;
  const box = $("inputs");
  box.innerHTML = "";
  for (const [name, kind] of Object.entries(spec.inputs)) {
    const label = document.createElement("label");
    label.textContent = name + optionalNote(spec, name, kind);
    label.htmlFor = `in-${name}`;
    box.appendChild(label);
    const help = document.createElement("p");
    help.className = "help"; help.id = `help-${name}`;
    help.textContent = (spec.input_help || {})[name] || (kind === "text" ? "Text." : "An audio file.");
    if (kind === "text") {
      const ta = document.createElement("textarea");
      ta.id = `in-${name}`; ta.name = name; ta.required = !spec.optional.includes(name);
      ta.setAttribute("aria-describedby", help.id);
      if (example[name]) ta.placeholder = `e.g. ${example[name]}`;
      box.append(help, ta);
    } else {
      const row = document.createElement("div");
      row.className = "audio-input";
      const file = document.createElement("input");
      file.type = "file"; file.accept = "audio/*"; file.id = `in-${name}`; file.name = name;
      file.setAttribute("aria-describedby", help.id);
      const rec = document.createElement("button");
      rec.type = "button"; rec.className = "rec"; rec.textContent = "Record";
      const note = document.createElement("span");
      rec.addEventListener("click", () => toggleRecord(name, rec, note));
      row.append(file, rec, note);
      box.append(help, row);
    }
  }
}

// --- recording: raw PCM through Web Audio, encoded as 16-bit WAV (no codec the server cannot read)
let recState = null;
async function toggleRecord(name, button, note) {
  if (recState) {
    const { ctx, stream, chunks, proc } = recState;
    proc.disconnect(); stream.getTracks().forEach((t) => t.stop());
    const wav = encodeWav(chunks, ctx.sampleRate);
    await ctx.close();
    recorded[name] = wav; recState = null;
    button.textContent = "Record"; note.textContent = `recorded ${(wav.size / 2 / ctx.sampleRate).toFixed(1)} s`;
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const ctx = new AudioContext();
    const src = ctx.createMediaStreamSource(stream);
    const proc = ctx.createScriptProcessor(4096, 1, 1);
    const chunks = [];
    proc.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
    src.connect(proc); proc.connect(ctx.destination);
    recState = { ctx, stream, chunks, proc };
    button.textContent = "Stop"; note.textContent = "recording…";
  } catch (err) { showError(`cannot record: ${err.message}`); }
}

function encodeWav(chunks, sampleRate) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const buf = new ArrayBuffer(44 + 2 * n);
  const v = new DataView(buf);
  const str = (o, s) => [...s].forEach((ch, i) => v.setUint8(o + i, ch.charCodeAt(0)));
  str(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); str(8, "WAVEfmt "); v.setUint32(16, 16, true);
  v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, sampleRate, true);
  v.setUint32(28, sampleRate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  str(36, "data"); v.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) for (const s of c) { v.setInt16(o, Math.max(-1, Math.min(1, s)) * 32767, true); o += 2; }
  return new Blob([buf], { type: "audio/wav" });
}

// --- drawing
function drawWave(samples) {
  const c = $("wave"), g = c.getContext("2d");
  g.fillStyle = "#0d1117"; g.fillRect(0, 0, c.width, c.height);
  g.strokeStyle = "#58a6ff"; g.beginPath();
  const step = Math.max(1, Math.floor(samples.length / c.width));
  for (let x = 0; x < c.width; x++) {
    let lo = 1, hi = -1;
    for (let i = x * step; i < Math.min(samples.length, (x + 1) * step); i++) { lo = Math.min(lo, samples[i]); hi = Math.max(hi, samples[i]); }
    g.moveTo(x, (1 - hi) * c.height / 2); g.lineTo(x, (1 - lo) * c.height / 2);
  }
  g.stroke();
}

function fft(re, im) {  // in place, radix 2
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = -2 * Math.PI / len;
    for (let i = 0; i < n; i += len) for (let k = 0; k < len / 2; k++) {
      const wr = Math.cos(ang * k), wi = Math.sin(ang * k);
      const ur = re[i + k], ui = im[i + k];
      const vr = re[i + k + len / 2] * wr - im[i + k + len / 2] * wi;
      const vi = re[i + k + len / 2] * wi + im[i + k + len / 2] * wr;
      re[i + k] = ur + vr; im[i + k] = ui + vi; re[i + k + len / 2] = ur - vr; im[i + k + len / 2] = ui - vi;
    }
  }
}

function drawSpec(samples) {
  const c = $("spec"), g = c.getContext("2d");
  const N = 512, bins = N / 2;
  const img = g.createImageData(c.width, c.height);
  const hop = Math.max(1, Math.floor((samples.length - N) / c.width));
  for (let x = 0; x < c.width; x++) {
    const re = new Float64Array(N), im = new Float64Array(N);
    for (let i = 0; i < N; i++) re[i] = (samples[x * hop + i] || 0) * (0.5 - 0.5 * Math.cos(2 * Math.PI * i / N));
    fft(re, im);
    for (let y = 0; y < c.height; y++) {
      const b = Math.floor((1 - y / c.height) * (bins - 1));
      const db = 10 * Math.log10(re[b] * re[b] + im[b] * im[b] + 1e-10);
      const t = Math.max(0, Math.min(1, (db + 60) / 80));
      const p = 4 * (y * c.width + x);
      img.data[p] = 255 * t; img.data[p + 1] = 255 * t * t; img.data[p + 2] = 255 * (1 - t) * 0.6; img.data[p + 3] = 255;
    }
  }
  g.putImageData(img, 0, 0);
}

async function showAudio(blob) {
  const url = URL.createObjectURL(blob);
  $("player").src = url; $("download").href = url;
  $("player").hidden = false; $("download").hidden = false; $("text-out").hidden = true;
  const ctx = new OfflineAudioContext(1, 1, SAMPLE_RATE);
  const buf = await ctx.decodeAudioData(await blob.arrayBuffer());
  const samples = buf.getChannelData(0);
  drawWave(samples); drawSpec(samples);
  $("wave").hidden = false; $("spec").hidden = false;
  $("result-info").textContent = `${buf.duration.toFixed(2)} s at ${buf.sampleRate} Hz`;
}

$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("");
  const spec = TASKS[$("task").value];
  const body = new FormData();
  body.append("task", spec.name);
  for (const [name, kind] of Object.entries(spec.inputs)) {
    if (kind === "text") { const v = $(`in-${name}`).value; if (v.trim()) body.append(name, v); }
    else {
      const f = $(`in-${name}`).files[0] || recorded[name];
      if (f) body.append(name, f, f.name || `${name}.wav`);
      else if (!spec.optional.includes(name)) { showError(`${name}: upload or record audio`); return; }
    }
  }
  for (const k of Object.keys(DEFAULTS)) body.append(k, $(`opt-${k}`).value);
  $("go").disabled = true; setStatus("generating…");
  const t0 = performance.now();
  try {
    const r = await fetch("/generate", { method: "POST", body });
    if (!r.ok) { const e = await r.json().catch(() => ({ error: r.statusText })); throw new Error(e.error || r.statusText); }
    $("result").hidden = false;
    if ((r.headers.get("content-type") || "").startsWith("audio/")) await showAudio(await r.blob());
    else {
      const j = await r.json();
      $("text-out").textContent = j.text; $("text-out").hidden = false;
      for (const id of ["player", "download", "wave", "spec"]) $(id).hidden = true;
      $("result-info").textContent = "text answer";
    }
    setStatus(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (err) { showError(err.message); setStatus("failed"); }
  finally { $("go").disabled = false; }
});

loadTasks().catch((err) => showError(`cannot load tasks: ${err.message}`));
