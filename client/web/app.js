// The page: the microphone, or a local file, streamed to the CARFAC server
// this page came from (protocol v1, at the browser's own sample rate: the
// server resamples), and the frames it returns drawn as they come; with a
// server that offers it, the pitchogram too, and a choice of hearing profile
// (the server's example audiograms) and calibrated level for the next stream.
//
// A server with a token: open the page as /?token=SECRET, or type it in.
// window.carfacState mirrors what the page shows (state, error, the ready
// message, frames drawn, the end message), for debugging and for tests.

import {Capture} from "./capture.js";
import {CochleagramView} from "./cochleagram.js";
import {PitchogramView} from "./pitchogram.js";
import {Stream, streamUrl} from "./protocol.js";

const $ = (id) => document.getElementById(id);
const view = new CochleagramView($("cochleagram"), $("frequency-axis"), $("time-axis"));
const pitchView = new PitchogramView($("pitchogram"), $("lag-axis"));
const state = {state: "idle", detail: "", error: null, source: null, ready: null, framesDrawn: 0,
               pitchogramColumns: 0, end: null};
let offersPitchogram = false;  // the server's /v1/info lists the pitchogram output
window.carfacState = state;
const BUSY = ["connecting", "streaming", "stopping"];
let current = null;  // the latest run: {capture, stream}

function show(name, detail = "") {
  Object.assign(state, {state: name, detail});
  $("state").textContent = name;
  $("state").dataset.state = name;
  $("detail").textContent = detail;
  const busy = BUSY.includes(name);
  $("start-mic").disabled = busy;
  $("file").disabled = busy;
  $("hearing").disabled = busy;
  $("level").disabled = busy;
  $("pick-file").classList.toggle("disabled", busy);
  $("stop").disabled = name !== "streaming";
}

function fail(run, message) {
  if (run !== current || state.state === "error") return;
  state.error = message;
  $("error").textContent = message;
  $("error").hidden = false;
  show("error");
  run.stream?.close();
  run.capture?.close();
}

/** What went wrong, in words a user can act on. */
function describe(error) {
  if (error.name === "NotAllowedError") return "microphone permission denied: allow it, or play a local file";
  if (error.name === "NotFoundError") return "no microphone found: play a local file instead";
  if (error.name === "EncodingError") return "this file could not be decoded as audio";
  return `${error.name || "error"}: ${error.message || error}`;
}

function handlers(run) {
  return {
    onReady(ready) {
      if (run !== current) return;
      state.ready = ready;
      view.configure(ready.centre_frequencies_hz, ready.hop_samples / ready.model_rate);
      if (ready.pictures) pitchView.configure(ready.pictures.lags_s);
      $("pitchogram-figure").hidden = !ready.pictures;
      show(state.state === "stopping" ? "stopping" : "streaming",  // a short file may have ended already
           `${state.source}: ${run.capture.sampleRate} Hz in, model ${ready.model_rate} Hz, ` +
           `${ready.channels} channels, hop ${ready.hop_ms.toFixed(1)} ms${hearingNote(ready)}`);
    },
    onFrames(rows, count, channels, ears) {
      if (run !== current) return;
      view.push(rows, count, channels, ears);
      state.framesDrawn = view.framesDrawn;
    },
    onPitchogram(rows, count, values) {
      if (run !== current) return;
      pitchView.push(rows, count, values);
      state.pitchogramColumns = pitchView.columnsDrawn;
    },
    onEnd(end) {
      if (run !== current) return;
      state.end = end;
      run.capture.close();  // already closed after a stop; not after the server's shutdown
      show("stopped", `${state.source}: ${end.rows.frames} frames${hearingNote(state.ready)}` +
           (end.dropped_rows ? `, ${end.dropped_rows} dropped by the server` : "") +
           (end.reason === "shutdown" ? " (the server shut down)" : ""));
    },
    onError(code, message) {
      fail(run, `the server refused the stream: ${code}: ${message}`);
    },
    onClose(code, reason) {
      if (state.state !== "stopped") fail(run, `the connection closed (code ${code}${reason ? `: ${reason}` : ""})`);
    },
  };
}

/** The start message's hearing object from the profile and level chosen (undefined: none). */
function hearingRequest() {
  const hearing = {};
  if ($("hearing").value !== "normal") hearing.profile = $("hearing").value;
  if ($("level").value !== "") hearing.level_db_spl = Number($("level").value);
  return Object.keys(hearing).length ? hearing : undefined;
}

/** How the ready message's hearing reads: the profile chosen and the level. */
function hearingNote(ready) {
  if (!ready?.hearing) return "";
  const level = ready.hearing.level_db_spl === null ? "" : `, full scale = ${ready.hearing.level_db_spl} dB SPL`;
  return `, hearing ${$("hearing").value}${level}`;
}

/** Opens the audio and the stream, then `connect(capture, run)` feeds the audio in. */
async function start(source, connect) {
  const run = {capture: null, stream: null};
  current = run;
  Object.assign(state, {source, error: null, ready: null, framesDrawn: 0, pitchogramColumns: 0, end: null});
  $("error").hidden = true;
  show("connecting", source);
  if (!window.isSecureContext) {
    fail(run, "the microphone and audio worklets need a secure page: open it over https, or as localhost");
    return;
  }
  try {
    run.capture = await Capture.open((chunk) => run.stream.send(chunk));
    const hearing = hearingRequest();
    const start = {sample_rate: run.capture.sampleRate, channels: 1, format: "f32le",
                   ...(offersPitchogram ? {outputs: ["frames", "pitchogram"]} : {}),
                   ...(hearing ? {hearing} : {})};
    run.stream = new Stream(streamUrl(location.href, $("token").value), start, handlers(run));
    await connect(run.capture, run);
  } catch (error) {
    fail(run, describe(error));
  }
}

/** Ends the audio; the server flushes, sends the last frames and end. */
async function stop(run) {
  if (run !== current || run.capture === null || !["connecting", "streaming"].includes(state.state)) return;
  show("stopping", state.source);
  await run.capture.flush();
  run.stream.stop();
  await run.capture.close();
}

$("start-mic").addEventListener("click", () => start("microphone", (capture) => capture.microphone()));
$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = "";  // choosing the same file again plays it again
  if (file) start(file.name, (capture, run) => capture.file(file, () => stop(run)));
});
$("stop").addEventListener("click", () => stop(current));

/** The server's model and whether it wants a token (GET /v1/info; 503 while it compiles). */
async function describeServer() {
  try {
    const response = await fetch(new URL("../v1/info", location.href));
    if (response.status === 503) {
      $("server").textContent = "The server is compiling its model; streams open once it is ready…";
      setTimeout(describeServer, 2000);
      return;
    }
    const info = await response.json();
    $("server").textContent = `Server: CARFAC at ${info.model_rate} Hz, ${info.channels} channels, ` +
        `frames every ${info.hop_ms} ms` + (info.token_required ? "; a token is required" : "");
    if (info.token_required) $("token-field").hidden = false;
    offersPitchogram = info.outputs.includes("pitchogram");
    if (info.hearing?.supported) {
      for (const name of Object.keys(info.hearing.profiles).filter((name) => name !== "normal")) {
        $("hearing").append(new Option(name, name));
      }
      $("hearing-field").hidden = $("level-field").hidden = false;
    }
  } catch (error) {
    $("server").textContent = `The server did not answer: ${describe(error)}`;
  }
}

const token = new URLSearchParams(location.search).get("token");
if (token) $("token").value = token;
show("idle");
describeServer();
