// AudioWorklet processor: the input, mixed down to mono, in chunks of
// `chunkFrames` samples posted to the main thread (a 128-sample render
// quantum per message would be ~375 WebSocket messages a second).
// Posting "flush" to its port sends the partial chunk, then "flushed".

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunkFrames = options.processorOptions.chunkFrames;
    this.chunk = new Float32Array(this.chunkFrames);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data !== "flush") return;
      if (this.filled > 0) this.post(this.chunk.slice(0, this.filled));
      this.filled = 0;
      this.port.postMessage("flushed");
    };
  }

  post(samples) {
    this.port.postMessage(samples, [samples.buffer]);
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels.length === 0) return true;  // nothing connected (yet, or any more)
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      this.chunk[this.filled++] = sum / channels.length;
      if (this.filled === this.chunkFrames) {
        this.post(this.chunk);  // transferred: this.chunk is detached from here on
        this.chunk = new Float32Array(this.chunkFrames);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("carfac-capture", CaptureProcessor);
