"""Training data: finding and checking audio files, crops, the Lightning data module.

- :mod:`~audiodiff.data.filelists`: filelists, ``metadata.csv``, labelled CSVs, folder labels
- :mod:`~audiodiff.data.scan`: the cached up-front check of every file, the validation split
- :mod:`~audiodiff.data.datasets`: usable files, crops, clips and the crop sampler
- :mod:`~audiodiff.data.resident`: training audio decoded once and cropped on the device
- :mod:`~audiodiff.data.datamodule`: :class:`AudioDataModule`, which puts them together
"""

from audiodiff.data.datamodule import AudioDataModule
from audiodiff.data.datasets import AudioFile, ClipDataset, CropDataset, CropSampler, read_segment
from audiodiff.data.filelists import label_from_path, read_filelist, read_labelled_csv, read_metadata_csv
from audiodiff.data.scan import ScanResult, SkippedFile, scan_files, split_validation

__all__ = [
    "AudioDataModule",
    "AudioFile", "ClipDataset", "CropDataset", "CropSampler", "read_segment",
    "label_from_path", "read_filelist", "read_labelled_csv", "read_metadata_csv",
    "ScanResult", "SkippedFile", "scan_files", "split_validation",
]
