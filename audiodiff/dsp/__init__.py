"""Signal processing beside the mel: Griffin-Lim and spectral distances."""
