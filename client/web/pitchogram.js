// A scrolling pitchogram on a canvas, drawn as the server's pitchogram rows
// arrive (README, "Picture rows"): one pixel column per block (newest on the
// right), ROW_PX pixel rows per lag cell (the shortest lag on top), coloured
// as the reference's pitchogram demo does: the vowel coordinates (F2, F1)
// tint the column, a cell's brightness is its lag-profile value. Beside it
// the lags in ms. The canvas carries data-row-px and data-lags, so a reader
// of its pixels can tell which cell a row shows.

import {drawRowAxis, nearestTicks} from "./axis.js";

const ROW_PX = 2;
const WIDTH_PX = 400;  // the reference pipeline's num_frames
const TICK_MS = [1, 2, 3, 5, 10, 20, 30, 50];

/**
 * One cell's RGB, as the reference draws it (carfac.column_rgb): tint =
 * 127.5 (0.5 - 0.6 F1, 0.5 - 0.6 F2, 0.35 (F2 + F1) + 0.4); dark theme
 * tint x value, light theme 255 - that; clipped to [0, 255] and truncated.
 */
export function cellRgb(value, f2, f1, light = false) {
  const tint = [0.5 - 0.6 * f1, 0.5 - 0.6 * f2, 0.35 * (f2 + f1) + 0.4];
  return tint.map((t) => {
    const shade = 127.5 * t * value;
    return Math.trunc(Math.min(255, Math.max(0, light ? 255 - shade : shade)));
  });
}

export class PitchogramView {
  constructor(canvas, lagAxis) {
    this.canvas = canvas;
    this.lagAxis = lagAxis;
    this.context = canvas.getContext("2d", {willReadFrequently: true});
    this.lags = 0;
    this.columnsDrawn = 0;
  }

  /** Clears the picture and labels the lag axis for a stream's cells (their lags in seconds). */
  configure(lagsS) {
    this.lags = lagsS.length;
    this.canvas.width = WIDTH_PX;
    this.canvas.height = this.lags * ROW_PX;
    this.canvas.dataset.rowPx = ROW_PX;
    this.canvas.dataset.lags = this.lags;
    this.context.fillStyle = "rgb(0, 0, 0)";
    this.context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.columnsDrawn = 0;
    const ticks = nearestTicks(lagsS.map((s) => 1000 * s), TICK_MS, (ms) => `${ms}`);
    drawRowAxis(this.lagAxis, this.canvas.height, ticks, ROW_PX);
  }

  /** Draws `count` pitchogram rows of `values` (lags + 2: the profile, then F2 and F1), scrolling left. */
  push(rows, count, values) {
    const lags = values - 2;
    const image = this.context.createImageData(count, this.canvas.height);
    for (let f = 0; f < count; f++) {
      const row = rows.subarray(f * values, (f + 1) * values);
      for (let lag = 0; lag < lags; lag++) {
        const rgb = cellRgb(row[lag], row[lags], row[lags + 1]);
        for (let r = lag * ROW_PX; r < (lag + 1) * ROW_PX; r++) {
          const pixel = 4 * (r * count + f);
          image.data.set(rgb, pixel);
          image.data[pixel + 3] = 255;
        }
      }
    }
    this.context.drawImage(this.canvas, -count, 0);
    this.context.putImageData(image, this.canvas.width - count, 0);
    this.columnsDrawn += count;
  }
}
