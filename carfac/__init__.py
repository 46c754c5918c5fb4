"""CARFAC (Lyon's Cascade of Asymmetric Resonators with Fast-Acting Compression) in plain JAX.

Four data classes per stage: DesignParameters (user-set), Hypers (static,
designed), Weights (trainable) and State (donatable). Typical use::

    import carfac
    params = carfac.CarfacDesignParameters(fs=22050.0, n_ears=1)
    hypers, weights, state = carfac.design_and_init_carfac(params)
    naps, state, bm, seg_ohc, seg_agc = carfac.run_segment_jit(
        audio, hypers, weights, state)
"""

from carfac._xla_flags import apply_xla_tuning

apply_xla_tuning()  # before anything below can start a JAX backend

from carfac import hearing
from carfac._dataclasses import pytree_dataclass
from carfac.agc import AgcDesignParameters, AgcHypers, AgcState, AgcWeights
from carfac.batch import agc_period, run_segment_batch
from carfac.car import CarDesignParameters, CarHypers, CarState, CarWeights
from carfac.carfac import (
  CarfacDesignParameters,
  CarfacHypers,
  CarfacState,
  CarfacWeights,
  FullSegmentOutput,
  SegmentOutput,
  design_and_init_carfac,
  run_segment,
  run_segment_full,
  run_segment_full_jit,
  run_segment_jit,
  run_segment_outputs,
)
from carfac.ear import EarDesignParameters, EarHypers, EarState, EarWeights
from carfac.hearing import input_gain_for_level, ohc_health_from_audiogram, with_ohc_health
from carfac.ihc import IHC_STYLE_NAMES, IhcDesignParameters, IhcHypers, IhcState, IhcWeights
from carfac.pitchogram import (
  PipelineFrame,
  PitchogramDesignParameters,
  PitchogramHypers,
  PitchogramPipeline,
  PitchogramPipelineParams,
  PitchogramState,
  column_rgb,
  design_and_init_pitchogram,
  design_and_init_pitchogram_stages,
  pipeline_carfac_params,
  run_pitchogram_frame,
  run_pitchogram_segment,
  vowel_embedding,
)
from carfac.sai import (
  SaiDesignParameters,
  SaiHypers,
  SaiState,
  design_and_init_sai,
  run_sai_segment,
  run_sai_segment_jit,
)
from carfac.sample_step import OUTPUT_NAMES, close_agc_loop, cross_couple, repeat_streams, select_streams
from carfac.syn import SynDesignParameters, SynHypers, SynState, SynWeights
from carfac.weights_file import WeightsFileError, load_weights, save_weights

__all__ = [
  "AgcDesignParameters",
  "AgcHypers",
  "AgcState",
  "AgcWeights",
  "CarDesignParameters",
  "CarHypers",
  "CarState",
  "CarWeights",
  "CarfacDesignParameters",
  "CarfacHypers",
  "CarfacState",
  "CarfacWeights",
  "EarDesignParameters",
  "EarHypers",
  "EarState",
  "EarWeights",
  "FullSegmentOutput",
  "IHC_STYLE_NAMES",
  "IhcDesignParameters",
  "IhcHypers",
  "IhcState",
  "IhcWeights",
  "OUTPUT_NAMES",
  "PipelineFrame",
  "PitchogramDesignParameters",
  "PitchogramHypers",
  "PitchogramPipeline",
  "PitchogramPipelineParams",
  "PitchogramState",
  "SaiDesignParameters",
  "SaiHypers",
  "SaiState",
  "SegmentOutput",
  "SynDesignParameters",
  "SynHypers",
  "SynState",
  "SynWeights",
  "WeightsFileError",
  "agc_period",
  "close_agc_loop",
  "column_rgb",
  "cross_couple",
  "design_and_init_carfac",
  "design_and_init_pitchogram",
  "design_and_init_pitchogram_stages",
  "design_and_init_sai",
  "hearing",
  "input_gain_for_level",
  "load_weights",
  "ohc_health_from_audiogram",
  "pipeline_carfac_params",
  "pytree_dataclass",
  "repeat_streams",
  "run_pitchogram_frame",
  "run_pitchogram_segment",
  "run_sai_segment",
  "run_sai_segment_jit",
  "run_segment",
  "run_segment_batch",
  "run_segment_full",
  "run_segment_full_jit",
  "run_segment_jit",
  "run_segment_outputs",
  "save_weights",
  "select_streams",
  "vowel_embedding",
  "with_ohc_health",
]
