"""Data: image IO, MATLAB-exact resizing, dataset checks and the checked paired dataset."""
from .checked_dataset import CheckedPairedImageDataset, DatasetSampleError  # noqa: F401  registers the dataset
