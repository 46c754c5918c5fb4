// Protocol v1 of WS /v1/stream from the browser (README, "Protocol v1").
//
// A Stream sends the JSON start message, float32 audio chunks and the JSON
// stop, and hands back what the server sends: ready, frame messages (decoded
// with the header struct and payload layout that ready describes) and end or
// error. Audio given before ready is held and sent once ready comes, so a
// file's first samples are not lost while the server opens the stream.

const STRUCT_CODES = {B: [1, "getUint8"], H: [2, "getUint16"], I: [4, "getUint32"], Q: [8, "getBigUint64"]};

/** A function reading a header described as {struct: "<BBHHHQQII", fields: [...]} from a DataView. */
export function headerReader(header) {
  if (header.struct[0] !== "<") throw new Error(`unsupported header byte order: ${header.struct}`);
  let offset = 0;
  const readers = [...header.struct.slice(1)].map((code) => {
    if (!(code in STRUCT_CODES)) throw new Error(`unsupported header field type: ${code}`);
    const [size, getter] = STRUCT_CODES[code];
    const at = offset;
    offset += size;
    return (view) => Number(view[getter](at, true));
  });
  if (readers.length !== header.fields.length) throw new Error("header struct and fields disagree");
  return (view) => Object.fromEntries(header.fields.map((name, i) => [name, readers[i](view)]));
}

/** The stream endpoint next to this page (page at /web/ -> /v1/stream), with the token if any. */
export function streamUrl(pageUrl, token) {
  const url = new URL("../v1/stream", pageUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

/**
 * One protocol-v1 stream of mono float32 audio.
 * handlers: onReady(ready), onFrames(rows Float32Array, count, channels, ears),
 * onPitchogram(rows Float32Array, count, values) when the start asked for it,
 * onEnd(end), onError(code, message), onClose(code, reason).
 */
export class Stream {
  constructor(url, start, handlers) {
    this.handlers = handlers;
    this.ready = null;
    this.pending = [];
    this.stopRequested = false;
    this.ws = new WebSocket(url);
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => this.ws.send(JSON.stringify({type: "start", ...start}));
    this.ws.onmessage = (event) => this.receive(event.data);
    this.ws.onclose = (event) => handlers.onClose(event.code, event.reason);
  }

  receive(data) {
    if (typeof data !== "string") {
      const header = this.readHeader(new DataView(data));
      const rows = new Float32Array(data, header.header_bytes, header.count * header.channels * header.ears);
      if (header.kind === this.ready.kinds.frames) {
        this.handlers.onFrames(rows, header.count, header.channels, header.ears);
      } else if (header.kind === this.ready.kinds.pitchogram) {  // (count, lags + 2, 1)
        this.handlers.onPitchogram?.(rows, header.count, header.channels);
      }
      return;
    }
    const message = JSON.parse(data);
    if (message.type === "ready") {
      if (message.payload.dtype !== "<f4") throw new Error(`unsupported payload ${message.payload.dtype}`);
      this.ready = message;
      this.readHeader = headerReader(message.header);
      this.handlers.onReady(message);
      this.pending.forEach((chunk) => this.ws.send(chunk));
      this.pending = [];
      if (this.stopRequested) this.stop();
    } else if (message.type === "end") {
      this.handlers.onEnd(message);
    } else if (message.type === "error") {
      this.handlers.onError(message.code, message.message);
    }
  }

  /** A chunk of mono float32 samples (little-endian, as every browser platform stores them). */
  send(samples) {
    if (this.ready === null) this.pending.push(samples);
    else if (this.ws.readyState === WebSocket.OPEN) this.ws.send(samples);
  }

  /** Asks the server to flush: the last frames, then end, then the close (after ready, if it has not come). */
  stop() {
    this.stopRequested = true;
    if (this.ready !== null && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({type: "stop"}));
  }

  /** Drops the connection without waiting for the server. */
  close() {
    this.ws.close();
  }
}
