// The labelled vertical axis beside a plot whose rows come in bands (a
// channel of the cochleagram, a lag cell of the pitchogram).

/** The index of the value nearest each tick that the values span, with the tick's label. */
export function nearestTicks(values, ticks, label) {
  const low = Math.min(...values), high = Math.max(...values);
  return ticks.filter((tick) => low <= tick && tick <= high).map((tick) => {
    const distances = values.map((value) => Math.abs(value - tick));
    return {index: distances.indexOf(Math.min(...distances)), label: label(tick)};
  });
}

/** Draws `ticks` ({index, label}) on `axis`, each at the middle of its band of `rowPx` rows. */
export function drawRowAxis(axis, height, ticks, rowPx) {
  const g = axis.getContext("2d");
  axis.height = height;
  g.clearRect(0, 0, axis.width, axis.height);
  g.font = "11px sans-serif";
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (const {index, label} of ticks) {
    const y = index * rowPx + rowPx / 2;
    g.fillText(label, axis.width - 7, y);
    g.fillRect(axis.width - 4, y - 0.5, 4, 1);
  }
}
