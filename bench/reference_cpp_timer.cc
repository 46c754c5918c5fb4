// Times google/carfac's C++ CARFAC for bench/bench_model.py; prints one JSON object.
//
// Built by bench_model.py in a temporary folder against a checkout named by
// CARFAC_REFERENCE_CPP (never part of this repository):
//   g++ -O3 -march=native -I<checkout>/cpp -I/usr/include/eigen3 this.cc <checkout>/cpp/{car,carfac,ear,sai}.cc
// Design: the C++ defaults at 22050 Hz, mono, float (its IHC defaults to one
// capacitor). Input: N(0, 1) * 1e-4, as bench_model.py feeds ours. NAP only.
//
// Usage: reference_cpp_timer SECONDS BLOCK THREADS
//   offline: one RunSegment over SECONDS of audio (best of 3);
//   blocks: RunSegment on BLOCK-sample blocks, state carried (median, p99);
//   threads: THREADS independent models on THREADS threads, SECONDS each,
//     aggregate x real time (how the C++ serves many streams).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "carfac.h"

namespace {

constexpr FPType kSampleRate = 22050;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

ArrayXX Noise(int n_samp, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ArrayXX sound(1, n_samp);
  for (int i = 0; i < n_samp; ++i) sound(0, i) = normal(generator) * 1e-4f;
  return sound;
}

CARFAC MakeModel() { return CARFAC(1, kSampleRate, CARParams(), IHCParams(), AGCParams()); }

double RunOnce(CARFAC* model, const ArrayXX& sound, CARFACOutput* output) {
  double start = Now();
  model->RunSegment(sound, false, output);
  return Now() - start;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s SECONDS BLOCK THREADS\n", argv[0]);
    return 2;
  }
  const double seconds = std::atof(argv[1]);
  const int block = std::atoi(argv[2]);
  const int threads = std::atoi(argv[3]);
  const int n_samp = static_cast<int>(seconds * kSampleRate);
  const ArrayXX sound = Noise(n_samp, 0);

  double offline = 1e30;
  for (int repeat = 0; repeat < 3; ++repeat) {
    CARFAC model = MakeModel();
    CARFACOutput output(true, false, false, false);
    offline = std::min(offline, RunOnce(&model, sound, &output));
  }

  CARFAC model = MakeModel();
  CARFACOutput output(true, false, false, false);
  std::vector<double> block_times;
  const ArrayXX blocks = Noise(320 * block, 1);
  for (int i = 0; i < 320; ++i) {
    double took = RunOnce(&model, blocks.middleCols(i * block, block), &output);
    if (i >= 20) block_times.push_back(took);
  }
  std::sort(block_times.begin(), block_times.end());

  std::vector<std::thread> workers;
  double start = Now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&sound] {
      CARFAC own = MakeModel();
      CARFACOutput own_output(true, false, false, false);
      own.RunSegment(sound, false, &own_output);
    });
  }
  for (std::thread& worker : workers) worker.join();
  const double threaded = Now() - start;

  const double block_s = block / kSampleRate;
  const double median = block_times[block_times.size() / 2];
  const double p99 = block_times[static_cast<size_t>(0.99 * (block_times.size() - 1))];
  std::printf(
      "{\"offline_x_real_time\": %.4f, \"block_median_ms\": %.5f, \"block_p99_ms\": %.5f, "
      "\"block_median_fraction_of_duration\": %.6f, \"threads\": %d, "
      "\"threads_aggregate_x_real_time\": %.4f}\n",
      seconds / offline, 1e3 * median, 1e3 * p99, median / block_s, threads,
      threads * seconds / threaded);
  return 0;
}
