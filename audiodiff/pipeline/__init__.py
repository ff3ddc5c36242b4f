"""Self-describing models: configuration, loading, saving, vocoding and generation.

The public names of the pipeline layer, from its modules: :mod:`.audio_diffusion` (the
:class:`AudioDiffusion` facade), :mod:`.config` (:class:`ModelConfig`, the file format's name and
version), :mod:`.loading` (model files, checkpoints, shipped models), :mod:`.reference`
(reference DiffWave checkpoints).
"""

from audiodiff.diffusion.samplers import SAMPLERS, SamplingSchedule
from audiodiff.engines.policy import PRECISIONS, resolve_engine, resolve_precision
from audiodiff.io.model_file import ModelFileError, stored_float_dtype
from audiodiff.pipeline.audio_diffusion import DEFAULT_CONDITIONING_BUDGET, AudioDiffusion
from audiodiff.pipeline.config import (CHECKPOINT_CONFIG_KEY, FORMAT_NAME, FORMAT_VERSION, ModelConfig,
                                       check_schedule_name)
from audiodiff.pipeline.loading import (DEFAULT_GENERATOR, DEFAULT_VOCODER, SHIPPED_MODELS, load_any,
                                        load_checkpoint, load_model, load_weights_only, read_config_dict,
                                        resolve_model_path, shipped_model_path)
from audiodiff.pipeline.reference import config_from_reference, import_diffwave

__all__ = [
    "AudioDiffusion", "CHECKPOINT_CONFIG_KEY", "DEFAULT_CONDITIONING_BUDGET", "DEFAULT_GENERATOR", "DEFAULT_VOCODER",
    "FORMAT_NAME", "FORMAT_VERSION", "ModelConfig", "ModelFileError", "PRECISIONS", "SAMPLERS", "SHIPPED_MODELS",
    "SamplingSchedule", "check_schedule_name", "config_from_reference", "import_diffwave", "load_any",
    "load_checkpoint", "load_model", "load_weights_only", "read_config_dict", "resolve_model_path",
    "resolve_engine", "resolve_precision", "shipped_model_path", "stored_float_dtype",
]
