// Audio into the page: the microphone or a local file, through the capture
// worklet, as mono float32 chunks at the AudioContext's own rate (the
// server resamples to the model's).

const CHUNK_SECONDS = 0.02;
// Raw capture: the browser's echo cancellation, noise suppression and gain
// control would reshape the very signal the cochleagram is to show.
const RAW_AUDIO = {audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false}};

export class Capture {
  /** An AudioContext with the capture worklet; onChunk(Float32Array) gets every chunk. */
  static async open(onChunk) {
    const ctx = new AudioContext();  // first, while the click that asked for it still counts as a gesture
    try {
      await ctx.audioWorklet.addModule(new URL("capture-worklet.js", import.meta.url));
      const chunkFrames = Math.round(CHUNK_SECONDS * ctx.sampleRate);
      const node = new AudioWorkletNode(ctx, "carfac-capture", {processorOptions: {chunkFrames}});
      await ctx.resume();
      return new Capture(ctx, node, onChunk);
    } catch (error) {
      ctx.close();
      throw error;
    }
  }

  constructor(ctx, node, onChunk) {
    this.ctx = ctx;
    this.node = node;
    this.media = null;
    this.source = null;
    this.flushed = null;
    node.port.onmessage = (event) => {
      if (event.data === "flushed") this.flushed?.();
      else onChunk(event.data);
    };
  }

  get sampleRate() {
    return this.ctx.sampleRate;
  }

  /** Captures the microphone (asks for permission). */
  async microphone() {
    this.media = await navigator.mediaDevices.getUserMedia(RAW_AUDIO);
    this.source = this.ctx.createMediaStreamSource(this.media);
    this.source.connect(this.node);  // not to the speakers: no feedback
  }

  /** Plays a local file (heard, and captured); onEnded() after its last chunk. Returns its duration, s. */
  async file(file, onEnded) {
    const buffer = await this.ctx.decodeAudioData(await file.arrayBuffer());
    const source = new AudioBufferSourceNode(this.ctx, {buffer});
    source.connect(this.node);
    source.connect(this.ctx.destination);
    source.onended = () => this.flush().then(onEnded);
    this.source = source;
    source.start();
    return buffer.duration;
  }

  /** Hands over the partial chunk; resolves after it. */
  flush() {
    return new Promise((resolve) => {
      this.flushed = resolve;
      this.node.port.postMessage("flush");
    });
  }

  /** Releases the microphone and the AudioContext (again: nothing happens). */
  async close() {
    if (this.source) this.source.onended = null;
    this.media?.getTracks().forEach((track) => track.stop());
    this.source?.disconnect();
    if (this.ctx.state !== "closed") await this.ctx.close();
  }
}
