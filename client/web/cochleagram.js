// A scrolling cochleagram on a canvas, drawn as frames arrive: one pixel
// column per frame (newest on the right), a band of ROW_PX pixel rows per
// channel (channel 0, the highest centre frequency, on top), the mean NAP
// (ears averaged) on a magma-like colour scale whose top follows the recent
// peak. Beside it the centre frequencies in Hz, below it seconds before now.
// The canvas carries data-row-px and data-channels, so a reader of its
// pixels can tell which channel a row shows.

import {drawRowAxis, nearestTicks} from "./axis.js";

const ROW_PX = 4;
const WIDTH_PX = 600;
const TICK_HZ = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000];
// Magma's colours at nine even steps: dark purple to pale yellow, brightness rising throughout.
const MAGMA = [[0, 0, 4], [28, 16, 68], [79, 18, 123], [129, 37, 129], [181, 54, 122],
               [229, 80, 100], [251, 135, 97], [254, 194, 135], [252, 253, 191]];
const PEAK_DECAY = 0.995;  // per frame: after a loud sound the scale's top halves in ~140 frames
const PEAK_FLOOR = 1e-3;   // silence stays dark instead of its noise being stretched to full scale

/** 256 RGB colours interpolated along MAGMA. */
function colourTable() {
  const table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (MAGMA.length - 1);
    const k = Math.min(Math.floor(x), MAGMA.length - 2);
    for (let j = 0; j < 3; j++) table[3 * i + j] = MAGMA[k][j] + (x - k) * (MAGMA[k + 1][j] - MAGMA[k][j]);
  }
  return table;
}

export class CochleagramView {
  constructor(canvas, frequencyAxis, timeAxis) {
    this.canvas = canvas;
    this.frequencyAxis = frequencyAxis;
    this.timeAxis = timeAxis;
    this.context = canvas.getContext("2d", {willReadFrequently: true});
    this.colours = colourTable();
    this.channels = 0;
    this.peak = PEAK_FLOOR;
    this.framesDrawn = 0;
  }

  /** Clears the picture and labels the axes for a stream's channels and hop. */
  configure(centreFrequencies, hopS) {
    this.channels = centreFrequencies.length;
    this.canvas.width = WIDTH_PX;
    this.canvas.height = this.channels * ROW_PX;
    this.canvas.dataset.rowPx = ROW_PX;
    this.canvas.dataset.channels = this.channels;
    this.context.fillStyle = `rgb(${MAGMA[0].join(",")})`;
    this.context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.peak = PEAK_FLOOR;
    this.framesDrawn = 0;
    this.drawFrequencyAxis(centreFrequencies);
    this.drawTimeAxis(hopS);
  }

  drawFrequencyAxis(centreFrequencies) {
    const ticks = nearestTicks(centreFrequencies, TICK_HZ, (hz) => (hz >= 1000 ? `${hz / 1000}k` : `${hz}`));
    drawRowAxis(this.frequencyAxis, this.canvas.height, ticks, ROW_PX);
  }

  drawTimeAxis(hopS) {
    const axis = this.timeAxis, g = axis.getContext("2d");
    axis.width = this.canvas.width;
    g.clearRect(0, 0, axis.width, axis.height);
    g.font = "11px sans-serif";
    g.textBaseline = "top";
    for (let s = 0; s / hopS < axis.width; s++) {
      const x = axis.width - 1 - s / hopS;
      g.fillRect(x, 0, 1, 4);
      g.textAlign = s === 0 ? "right" : "center";
      g.fillText(s === 0 ? "now" : `-${s} s`, x, 5);
    }
  }

  /** Draws `count` frames of rows laid out (count, channels, ears), scrolling the older ones left. */
  push(rows, count, channels, ears) {
    const image = this.context.createImageData(count, this.canvas.height);
    const levels = new Float32Array(channels);
    for (let f = 0; f < count; f++) {
      let frameMax = 0;
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        for (let e = 0; e < ears; e++) sum += rows[(f * channels + c) * ears + e];
        levels[c] = sum / ears;
        frameMax = Math.max(frameMax, levels[c]);
      }
      this.peak = Math.max(this.peak * PEAK_DECAY, frameMax, PEAK_FLOOR);
      for (let c = 0; c < channels; c++) {
        const colour = 3 * Math.round(255 * Math.min(1, Math.max(0, levels[c] / this.peak)));
        for (let r = c * ROW_PX; r < (c + 1) * ROW_PX; r++) {
          const pixel = 4 * (r * count + f);
          image.data.set(this.colours.subarray(colour, colour + 3), pixel);
          image.data[pixel + 3] = 255;
        }
      }
    }
    this.context.drawImage(this.canvas, -count, 0);
    this.context.putImageData(image, this.canvas.width - count, 0);
    this.framesDrawn += count;
  }
}
