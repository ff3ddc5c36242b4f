"""Loading models: ``.safetensors`` model files (no unpickling), Lightning training checkpoints
(read with ``weights_only=True``), and the models shipped inside the package, by name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from audiodiff.engines.policy import resolve_engine
from audiodiff.io.model_file import ModelFileError, check_model_file, first_line, read_metadata, read_tensors
from audiodiff.pipeline.audio_diffusion import AudioDiffusion
from audiodiff.pipeline.config import CHECKPOINT_CONFIG_KEY, FORMAT_NAME, FORMAT_VERSION, config_from_dict

#: The models inside the package (``audiodiff/models/<name>.safetensors``), by name: wherever a
#: model path is taken, one of these names works too. See the README's model card.
SHIPPED_MODELS = {
    "speech-22k": "a 22.05 kHz speech vocoder, hifigan mel convention (80 bins, hop 256, fmax 8 kHz)",
    "sfx-22k": "a 22.05 kHz sound-effects generator with classes (classifier-free guidance)",
}
#: What ``vocode`` and ``generate`` (CLI and API) use when no model is given.
DEFAULT_VOCODER = "speech-22k"
DEFAULT_GENERATOR = "sfx-22k"
#: The package directory (``audiodiff/``), which holds the shipped models in ``models/``.
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def shipped_model_path(name: str) -> Path:
    """The file of the shipped model ``name`` (a key of :data:`SHIPPED_MODELS`)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"no shipped model {name!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    return PACKAGE_DIR / "models" / f"{name}.safetensors"


def resolve_model_path(path_or_name: str | os.PathLike) -> Path:
    """A shipped model's name (``speech-22k``, ``sfx-22k``) -> its file; anything else -> itself.

    A file of that name in the working directory wins over the shipped model.
    """
    if isinstance(path_or_name, str) and path_or_name in SHIPPED_MODELS and not Path(path_or_name).exists():
        return shipped_model_path(path_or_name)
    return Path(path_or_name)


def read_config_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The config dict stored in an audiodiff model file, after checking its format and version."""
    return read_metadata(path, FORMAT_NAME, FORMAT_VERSION)


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               engine: str = "auto") -> AudioDiffusion:
    """Load a ``.safetensors`` model written by :meth:`AudioDiffusion.save` (no unpickling).

    ``path`` may also name a shipped model (:data:`SHIPPED_MODELS`); ``None`` loads the shipped
    speech vocoder (:data:`DEFAULT_VOCODER`). Half-precision weights are loaded as float32.
    ``engine`` (:func:`~audiodiff.engines.policy.resolve_engine`): ``auto`` runs the folded engine
    on a CPU (the same audio up to float rounding, faster) and the eager one elsewhere, as the CLI does.
    """
    path = resolve_model_path(DEFAULT_VOCODER if path is None else path)
    config = config_from_dict(path, read_config_dict(path))
    model = AudioDiffusion(config)
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in read_tensors(Path(path)).items()}
        model.network.load_state_dict(state, strict=True)
    except Exception as error:  # noqa: BLE001 - safetensors/torch errors on damaged files
        raise ModelFileError(path, f"weights unreadable or do not match the stored config: {first_line(error)}") from None
    return _ready(model, device, engine)


def _ready(model: AudioDiffusion, device: str | torch.device, engine: str) -> AudioDiffusion:
    """``model`` on ``device``, in eval mode, sampling with ``engine`` (``auto`` resolved for the device)."""
    model = model.to(device).eval()
    return model.use_engine(resolve_engine(engine, model.device))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> AudioDiffusion:
    """Rebuild the model from a Lightning training checkpoint (``.ckpt``).

    Takes the checkpoint's ``state_dict``, which holds the EMA weights when training used the
    ``audiodiff.training.callbacks.EMA`` callback (all shipped recipes do). Read with ``weights_only=True``.
    """
    checkpoint = load_weights_only(path)
    if not isinstance(checkpoint, dict) or CHECKPOINT_CONFIG_KEY not in checkpoint:
        raise ModelFileError(path, "not an audiodiff training checkpoint (no audiodiff config inside)")
    config = config_from_dict(path, checkpoint[CHECKPOINT_CONFIG_KEY])
    prefix = "model.network."
    model = AudioDiffusion(config)
    try:
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        model.network.load_state_dict(state, strict=True)
    except (KeyError, AttributeError, RuntimeError) as error:
        raise ModelFileError(path, f"weights do not match the stored config: {first_line(error)}") from None
    return model.to(device).eval()


def load_any(path: str | os.PathLike, device: str | torch.device = "cpu", engine: str = "auto") -> AudioDiffusion:
    """A ``.safetensors`` model (or a shipped model's name) or, for convenience, a ``.ckpt`` training
    checkpoint, sampling with ``engine`` (as in :func:`load_model`)."""
    path = resolve_model_path(path)
    if Path(path).suffix == ".ckpt":
        return _ready(load_checkpoint(path, device), device, engine)
    return load_model(path, device, engine)


def load_weights_only(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors: a pickle that would run code is refused."""
    import zipfile

    from audiodiff.io.safe_load import describe_load_error

    path = Path(path)
    check_model_file(path)
    with open(path, "rb") as handle:
        pickled = handle.read(1) == b"\x80"  # the legacy format is a bare pickle (protocol >= 2)
    if not (pickled or zipfile.is_zipfile(path)):
        raise ModelFileError(path, "not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        with open(path, "rb") as handle:  # a file object: names that are not UTF-8 work too
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad pickles
        reason = describe_load_error(error)
        reason = reason if reason.startswith("refused") else f"unreadable as a checkpoint: {reason}"
        raise ModelFileError(path, reason) from None
